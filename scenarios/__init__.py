"""pytest-free drivers: one matrix point (Case), LoadGen load scenarios, the concurrency sweep,
token generation, the image->caption pipeline, per-engine memory in a fresh process, the
export command and its stage scripts, measurement primitives. Imports models and engines."""
