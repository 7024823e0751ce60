"""Model sources: the registry (ModelSpec, register_model, register_checkpoint), the zoo of
seeded random-weight architectures, hf: directories, onnx: files, the trained models (digits,
tiny decoders) and the vision-language pipeline. Imports engines only, never the pytest plugin."""
