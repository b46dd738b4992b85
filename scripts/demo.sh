#!/usr/bin/env bash
# `make demo`: start the product on 127.0.0.1 with a generated API key and UI password.
# Ctrl-C stops everything (the engine runs in its own process group and dies with the gateway).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-}"; PORT="${2:-8000}"; TINY_DIR="${3:-.cache/tiny-model}"
PY=.venv/bin/python
if [ -z "$MODEL" ]; then
  if [ ! -f "$TINY_DIR/infimed_tiny.json" ]; then
    echo "demo: building the tiny model in $TINY_DIR (seconds)…"
    rm -rf "$TINY_DIR.tmp"
    $PY -m infimed tiny-model "$TINY_DIR.tmp" >/dev/null
    rm -rf "$TINY_DIR"; mv "$TINY_DIR.tmp" "$TINY_DIR"
  fi
  MODEL="$TINY_DIR"; NAME="infimed-tiny"
else
  NAME="$(basename "$MODEL")"
fi
export INFIMED_API_KEY="${INFIMED_API_KEY:-imk_demo_$($PY -c 'import secrets; print(secrets.token_urlsafe(18))')}"
export INFIMED_UI_PASSWORD="${INFIMED_UI_PASSWORD:-$($PY -c 'import secrets; print(secrets.token_urlsafe(9))')}"
mkdir -p .cache
READY=.cache/demo-ready.txt; rm -f "$READY"
(
  while [ ! -s "$READY" ]; do sleep 0.5; done
  URL="$(cat "$READY")"
  cat <<MSG

  InfiMed is running (model: $NAME)
    API (OpenAI-compatible)  $URL/v1        API key: $INFIMED_API_KEY
    Clinician UI             $URL/ui        user: clinician   password: $INFIMED_UI_PASSWORD
    API docs                 $URL/docs
  Try:  OPENAI_BASE_URL=$URL/v1 OPENAI_API_KEY=$INFIMED_API_KEY $PY examples/chat_png.py
  Ctrl-C stops everything.

MSG
) &
exec $PY -m infimed serve --model "$MODEL" --served-model-name "$NAME" --port "$PORT" --ready-file "$READY" --engine-log .cache/engine.log
