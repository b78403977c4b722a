from .roles import Capability, user_can, user_role


def role(request):
    user = getattr(request, "user", None)
    return {
        "user_role": user_role(user),
        "can": {capability.value: user_can(user, capability) for capability in Capability},
    }
