"""Services write (HackSoft style): keyword-only functions named <entity>_<action>."""
