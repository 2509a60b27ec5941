#!/usr/bin/env bash
# Installs the ONNX Runtime shared library that coxswain loads at run time (ort's `load-dynamic`), taken from
# the official `onnxruntime` wheel on PyPI, into .ort/lib/ of this repo (git ignores it). Idempotent.
#
#   scripts/install-onnxruntime.sh            # CPU build, the version pinned below
#   ORT_VERSION=1.31.1 scripts/install-onnxruntime.sh
#
# The runtime looks for the library in this order: `--ort-lib` / config, $ORT_DYLIB_PATH, .ort/lib/ of the
# repo, then the system's library paths. `.cargo/config.toml` points $ORT_DYLIB_PATH here for cargo runs.
set -euo pipefail
ORT_VERSION="${ORT_VERSION:-1.31.1}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.ort/lib"
lib="$dest/libonnxruntime.so.$ORT_VERSION"
if [[ -f "$lib" ]]; then
  exit 0
fi
case "$(uname -m)" in
  x86_64) plat=manylinux_2_28_x86_64 ;;
  aarch64) plat=manylinux_2_28_aarch64 ;;
  *) echo "install-onnxruntime: no onnxruntime wheel for $(uname -m); set ORT_DYLIB_PATH to your own build" >&2; exit 1 ;;
esac
py="$(command -v python3 || command -v python || true)"
if [[ -z "$py" ]]; then
  echo "install-onnxruntime: python3 with pip is needed to fetch the onnxruntime wheel from PyPI" >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "install-onnxruntime: fetching onnxruntime==$ORT_VERSION ($plat) from PyPI" >&2
"$py" -m pip download --quiet --no-deps --only-binary=:all: --platform "$plat" \
  --python-version 3.11 --implementation cp -d "$tmp" "onnxruntime==$ORT_VERSION"
mkdir -p "$dest"
"$py" - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(tmp, "onnxruntime-*.whl"))
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime") and ".so" in n]
    if not names:
        sys.exit(f"install-onnxruntime: no libonnxruntime*.so in {wheel}")
    for n in names:
        out = os.path.join(dest, os.path.basename(n))
        with z.open(n) as src, open(out + ".part", "wb") as dst:
            dst.write(src.read())
        os.replace(out + ".part", out)
        print(f"install-onnxruntime: {out}", file=sys.stderr)
PY
test -f "$lib" || { echo "install-onnxruntime: expected $lib after unpacking" >&2; exit 1; }
