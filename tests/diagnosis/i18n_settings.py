"""Test settings whose catalogue folder is a copy, so a makemessages check never rewrites locale/."""

import os

from cxr_portal.settings.test import *  # noqa: F401,F403

LOCALE_PATHS = [os.environ["CXR_TEST_LOCALE_DIR"]]
