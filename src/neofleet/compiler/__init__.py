"""The neofleet compiler: what a compile pod runs.

    ingest/   safe loaders → SourceModel (static inputs, reference outputs)
    backends/ tvm | onnxruntime → Artifact (files for a bundle)
    verify    run each candidate through the runtime (host or qemu) vs the reference
    select    keep the fastest verified (or the documented preference)
    pipeline  compile_model(CompileRequest) → one bundle per target
    targets   the named target catalogue

Errors: see ``neofleet.compiler.errors`` (``CompileError`` and its branches).
"""
