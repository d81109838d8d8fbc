"""Issue 22 prototypes of the decide step (not wired into the job): the Python engine of today
as the baseline (`baseline`), a compiled core (`rust_core`, crate in `core/`) and a vectorised
Polars path (`polars_decide`). Each takes a chunk of raw Kafka records and gives back the
same `ChunkResult`, so `bench.decide_ab` can compare them and the tests can demand equality."""
