"""What frozenbench knows about the cluster it runs on: the preflight checks of a new Slurm site."""
