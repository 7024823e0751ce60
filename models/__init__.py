"""Model sources: the registry (ModelSpec, register_model, register_checkpoint), the zoo of
seeded random-weight architectures, hf: directories, onnx: files, the trained models (digits,
tiny decoders) and the vision-language pipeline. Imports engines, never the pytest plugin; the one
exception is vlm.py, which captions with the exported stage script's own decode loop
(scenarios/export_scripts/generate.py) so the original and split modes decode identically."""
