from hypothesis import HealthCheck, settings

# Shared machines are noisy: no per-example deadline, and generation may be slow.
settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")
