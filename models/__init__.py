"""Model sources: the registry (ModelSpec, register_model, register_checkpoint), the zoo of
seeded random-weight architectures, hf: directories, onnx: files, the trained models (digits,
tiny decoders) and the vision-language pipeline with the stage scripts its exports ship
(export_scripts/: vlm.py captions with their own decode loop, so the original and split modes
decode identically). Built-in models register when models/builtin.py is called, not on import.
Imports engines and core, never the runner, scenarios or the pytest plugin."""
