from tests.ray.cluster_fixtures import no_leaked_processes, ray_cluster  # noqa: F401
