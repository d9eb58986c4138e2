"""Training: one loop (`loop.train`) over two engines (torch, mlx), its config, run folders and metrics."""
