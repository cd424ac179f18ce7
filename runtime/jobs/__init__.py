"""Jobs: seed 004's task orchestrator (definitions, fire times, the run store, the engine).

See docs/jobs.md for the model. Not wired into the plane, the CLI or the HTTP API yet.
"""
