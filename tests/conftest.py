import pytest
from django.test import Client

from tests.factories import PatientFactory, UserFactory


@pytest.fixture(autouse=True)
def image_store(settings, tmp_path):
    """Every test gets its own empty image store."""
    settings.IMAGE_STORE_DIR = tmp_path / "images"
    return settings.IMAGE_STORE_DIR


@pytest.fixture(autouse=True)
def audit_anchor_file(settings, tmp_path):
    """Every test gets its own anchor file, outside the project."""
    settings.AUDIT_ANCHOR_FILE = tmp_path / "audit-anchors.jsonl"
    return settings.AUDIT_ANCHOR_FILE


@pytest.fixture(autouse=True)
def empty_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def default_language():
    """LocaleMiddleware activates a request's language for the whole thread; the next test starts in English."""
    from django.conf import settings
    from django.utils import translation

    yield
    translation.activate(settings.LANGUAGE_CODE)


def verify_second_factor(client: Client, user) -> None:
    """Mark the client's session as having passed TOTP, as django_otp.login does after a correct code.

    Tests of the second factor itself use a plain Client and type real codes (tests/accounts).
    """
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from accounts.roles import user_requires_two_factor

    if not user_requires_two_factor(user):
        return
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="test authenticator", confirmed=True)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()


class TwoFactorClient(Client):
    """A test client whose force_login also passes the second factor for roles that need one."""

    def force_login(self, user, backend=None):
        super().force_login(user, backend)
        verify_second_factor(self, user)


@pytest.fixture
def client():
    return TwoFactorClient()


@pytest.fixture
def clinician(db):
    return UserFactory(username="dr_ana", clinician=True)


@pytest.fixture
def second_clinician(db):
    return UserFactory(username="dr_ben", clinician=True)


@pytest.fixture
def administrator(db):
    return UserFactory(username="admin_carla", administrator=True)


@pytest.fixture
def auditor(db):
    return UserFactory(username="auditor_dev", auditor=True)


@pytest.fixture
def patient(db):
    return PatientFactory(mrn="MRN000123", name="Maria Lopez")


def inference_queue_as_list(monkeypatch) -> list[dict]:
    """run_inference.delay replaced: each queued study's arguments land in the list instead of on the broker."""
    queued: list[dict] = []
    monkeypatch.setattr("diagnosis.tasks.run_inference.delay", lambda **kwargs: queued.append(kwargs))
    return queued


@pytest.fixture
def queued_inference(monkeypatch) -> list[dict]:
    """What the code under test queued for inference, e.g. [{"study_id": 7}]; nothing reaches Celery."""
    return inference_queue_as_list(monkeypatch)


@pytest.fixture
def study(clinician, patient, queued_inference):
    """A received study; the inference task is not queued (on_commit does not run inside a test transaction)."""
    from diagnosis.services.ingest import study_create
    from tests import images

    return study_create(patient=patient, uploaded_by=clinician, data=images.png_bytes(), accession_number="ACC-STUDY")


@pytest.fixture
def admin_client(client, administrator):
    """A client signed in as the administrator (pytest-django's own admin_client needs a Django superuser)."""
    client.force_login(administrator)
    return client


@pytest.fixture
def auditor_client(client, auditor):
    client.force_login(auditor)
    return client


def only_event(action: str):
    from audit.models import AuditEvent

    events = list(AuditEvent.objects.filter(action=action))
    assert len(events) == 1, f"expected exactly one {action} event, found {len(events)}"
    return events[0]


def csv_rows(response) -> list[dict]:
    """The rows of a CSV download, keyed by its header."""
    import csv
    import io

    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def logged_in_client(user) -> Client:
    client = TwoFactorClient()
    client.force_login(user)
    return client


@pytest.fixture
def role_clients(db):
    """A client for each role plus anonymous, keyed by name."""
    users = {
        "clinician": UserFactory(clinician=True),
        "administrator": UserFactory(administrator=True),
        "auditor": UserFactory(auditor=True),
    }
    clients = {name: logged_in_client(user) for name, user in users.items()}
    clients["anonymous"] = Client()
    return clients


def synthetic_training_set(count_per_class: int = 20, size: int = 64, seed: int = 0):
    """Three visibly different synthetic 'films' so a tiny network can learn them in seconds."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images, labels = [], []
    y, x = np.mgrid[0:size, 0:size] / size
    patterns = [np.sin(8 * x) * 0.3 + 0.5, 0.2 + 0.6 * y, 0.8 - 0.6 * x]
    for label, pattern in enumerate(patterns):
        for _ in range(count_per_class):
            images.append(np.clip(pattern + rng.normal(0, 0.05, pattern.shape), 0, 1).astype("float32"))
            labels.append(label)
    return np.stack(images), np.array(labels)


def write_synthetic_folder(root, *, count_per_class: int, seed: int):
    """``synthetic_training_set`` as PNGs in the ``<root>/{covid,normal,pneumonia}/`` layout ml.evaluate reads."""
    import numpy as np
    from PIL import Image

    from ml.serving.labels import CLASS_NAMES

    films, labels = synthetic_training_set(count_per_class=count_per_class, seed=seed)
    for index, (film, label) in enumerate(zip(films, labels)):
        folder = root / CLASS_NAMES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((film * 255).astype(np.uint8)).save(folder / f"film{index}.png")
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A real (tiny) model artifact trained once per test session on synthetic images."""
    from ml.training.recipe import recipe_for
    from ml.training.train import train_from_arrays

    images, labels = synthetic_training_set()
    return train_from_arrays(
        images,
        labels,
        recipe=recipe_for("tiny", seed=7),
        out_dir=tmp_path_factory.mktemp("models") / "tiny",
        name="tiny-test",
        version="1",
    )


@pytest.fixture(scope="session")
def familiar_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny artifact plus a familiarity check (ml.familiarity) fitted on films of its own kind."""
    import shutil

    import numpy as np

    from ml.serving.artifact import load_metadata
    from ml.serving.preprocess import preprocess
    from ml.training.familiarity import add_familiarity

    path = tmp_path_factory.mktemp("familiar") / "tiny"
    shutil.copytree(tiny_model_dir, path)
    config = load_metadata(path).preprocess_config
    films, labels = synthetic_training_set(count_per_class=30, seed=11)
    inputs = np.stack([preprocess(film, config) for film in films])
    add_familiarity(path, train_inputs=inputs[::2], train_labels=labels[::2], val_inputs=inputs[1::2])
    return path


@pytest.fixture
def active_model(db, tiny_model_dir):
    from diagnosis.services.model_registry import model_version_register

    return model_version_register(artifact_dir=tiny_model_dir, activate=True)


def pytest_collection_modifyitems(items):
    """Every test that commits (transaction=True) must restore the migrated rows after its flush
    (serialized_rollback=True): one that does not leaves the next such test's content types already present,
    and every later transactional test then fails at setup with a duplicate key, far from the cause."""
    for item in items:
        marker = item.get_closest_marker("django_db")
        if marker and marker.kwargs.get("transaction") and not marker.kwargs.get("serialized_rollback"):
            raise pytest.UsageError(f"{item.nodeid}: use @pytest.mark.django_db(transaction=True, "
                                    "serialized_rollback=True)")
