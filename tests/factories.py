import factory

from accounts.models import Role, User
from accounts.roles import RoleName
from diagnosis.models import Patient

TEST_PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda number: f"user{number}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@hospital.test")
    role = factory.LazyFunction(lambda: Role.objects.get(name=RoleName.CLINICIAN))

    @factory.post_generation
    def password(user, create, extracted, **kwargs):
        user.set_password(extracted or TEST_PASSWORD)
        if create:
            user.save()

    class Params:
        clinician = factory.Trait(role=factory.LazyFunction(lambda: Role.objects.get(name=RoleName.CLINICIAN)))
        administrator = factory.Trait(role=factory.LazyFunction(lambda: Role.objects.get(name=RoleName.ADMINISTRATOR)))
        auditor = factory.Trait(role=factory.LazyFunction(lambda: Role.objects.get(name=RoleName.AUDITOR)))


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    # Not "MRN000123"-like: the patient fixture uses that one, and a long session reaches it.
    mrn = factory.Sequence(lambda number: f"F-MRN{number:06d}")
    name = factory.Faker("name")
    sex = "F"
