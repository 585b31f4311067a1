"""Running a sweep: spec, partition into tasks, the task function, the cube layout and its store,
the store lock, the planner and the runner that drives Dask."""
