from tests.ray.cluster_fixtures import no_leaked_processes  # noqa: F401  - Ray's own processes are exempt
