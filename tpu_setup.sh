#!/usr/bin/env bash
# tpu_setup.sh: install lmjax on Cloud TPU VMs and launch an experiment on every worker of a TPU slice.
#
# Usage:
#   ./tpu_setup.sh --local [--venv DIR]
#       On a TPU VM: create a virtual environment (default ~/lmjax-venv) and `pip install -e ".[tpu]"` from this
#       checkout (jax[tpu], which brings the matching libtpu).
#
#   ./tpu_setup.sh --tpu NAME --zone ZONE [--project P] [--worker all|N] [--repo URL [--ref REF]] [--dir DIR]
#                  [--venv DIR] [--env KEY=VALUE]... [--detach] [--no-install] [-- COMMAND ARGS...]
#       From a workstation with gcloud: copy this checkout to every worker of the TPU slice NAME (or, with --repo,
#       `git clone` it there), run `tpu_setup.sh --local` on each, then run COMMAND on all workers at once.
#
# Options:
#   --tpu NAME        TPU VM / slice name (as in `gcloud compute tpus tpu-vm list`).
#   --zone ZONE       its zone, e.g. us-central2-b.        --project P   GCP project (default: gcloud's).
#   --worker W        "all" (default) or one worker index, e.g. 0 to debug on the first host.
#   --repo URL        clone URL instead of copying the local checkout; --ref REF checks out a branch/tag/commit.
#   --dir DIR         checkout directory on the workers (default: lmjax, relative to the remote home).
#   --venv DIR        virtual environment (default: ~/lmjax-venv).
#   --env KEY=VALUE   extra environment for COMMAND (repeatable), e.g. --env LMJAX_DATA_DIR=/mnt/data.
#   --detach          start COMMAND with nohup on each worker (log: DIR/logs/tpu_run.log) and return.
#   --no-install      skip copying and installing; just run COMMAND.
#   -h, --help        show this help.
#
# Examples:
#   ./tpu_setup.sh --tpu my-v4-32 --zone us-central2-b -- lmjax train gpt2_124m --set train.steps=1000
#   ./tpu_setup.sh --tpu my-v5e --zone us-west4-a --repo https://github.com/ORG/lmjax --ref main --detach \
#       -- lmjax train gpt2_124m --set data.batch_size=256
#
# Multi-host: a slice with several hosts (v4-16 and up, v5litepod-16 and up, ...) runs one JAX process per host,
# and all of them must start the same program. Each process calls `jax.distributed.initialize()` with no
# arguments: on Cloud TPU, JAX reads the coordinator address, process count and index from the TPU metadata.
# lmjax makes that call itself when it detects several hosts: LMJAX_DISTRIBUTED=1 (which this script exports for
# COMMAND) or TPU worker variables that list more than one host (TPU_WORKER_HOSTNAMES, MEGASCALE_*).
# Data, checkpoints and logs should then live on storage every host can reach (e.g. a GCS bucket).
#
# Requirements: gcloud (remote mode), Python >= 3.11 on the VM; if the image's python3 is older (TPU Ubuntu 22.04
# images ship 3.10), the script installs `uv` and lets it provide Python 3.11.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MIN_PY="3.11"

usage() {
  # Print the header comment (after the shebang, up to the first non-comment line) without the leading "# ".
  sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "${BASH_SOURCE[0]}"
}

die() {
  echo "tpu_setup.sh: $*" >&2
  exit 1
}

log() {
  echo "[tpu_setup] $*" >&2
}

# ------------------------------------------------------------------------------------------- local installation

find_python() {
  # First interpreter at least $MIN_PY among $PYTHON and the usual names; prints its path.
  local candidate
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    if [[ -z "$candidate" ]] || ! command -v "$candidate" >/dev/null 2>&1; then
      continue
    fi
    if "$candidate" -c "import sys; sys.exit(sys.version_info < tuple(map(int, '$MIN_PY'.split('.'))))" 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

install_local() {
  local venv="$1" python
  [[ -f "$SCRIPT_DIR/pyproject.toml" ]] || die "run --local from an lmjax checkout (no pyproject.toml in $SCRIPT_DIR)"
  if [[ ! -x "$venv/bin/python" ]]; then
    if python="$(find_python)"; then
      log "creating $venv with $python"
      "$python" -m venv "$venv"
    else
      # No new-enough Python on the image: uv fetches a standalone build.
      log "no Python >= $MIN_PY found; installing uv to provide one"
      command -v uv >/dev/null 2>&1 || python3 -m pip install --user --quiet uv
      PATH="$HOME/.local/bin:$PATH" uv venv --seed --python "$MIN_PY" "$venv"
    fi
  fi
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  log "installing lmjax[tpu] into $venv"
  "$venv/bin/python" -m pip install --quiet -e "${SCRIPT_DIR}[tpu]"
  # Import only: touching the TPU backend on one host of a multi-host slice would wait for the other hosts.
  "$venv/bin/python" -c "import jax, libtpu, lmjax; print('lmjax ready: jax', jax.__version__, 'at', lmjax.__path__[0])"
}

# ------------------------------------------------------------------------------------------------ remote mode

ssh_workers() {
  # Run one shell command string on the selected workers.
  gcloud compute tpus tpu-vm ssh "$TPU" "${GCLOUD_ARGS[@]}" --worker="$WORKER" --command "$1"
}

ship_checkout() {
  local q_dir
  q_dir="$(printf '%q' "$REMOTE_DIR")"
  if [[ -n "$REPO" ]]; then
    local q_repo q_ref
    q_repo="$(printf '%q' "$REPO")"
    q_ref="$(printf '%q' "${REF:-HEAD}")"
    log "cloning $REPO${REF:+ @ $REF} into ~/$REMOTE_DIR on workers $WORKER"
    # A branch name means the remote's branch (origin/REF), not a stale local one; tags and commits as given.
    ssh_workers "set -e; [ -d $q_dir/.git ] || git clone --quiet $q_repo $q_dir; git -C $q_dir fetch --quiet --tags origin;
      git -C $q_dir checkout --quiet --detach \"\$(git -C $q_dir rev-parse --verify --quiet origin/$q_ref || echo $q_ref)\""
  else
    # Tracked plus untracked-but-not-ignored files: what a commit of the current tree would contain.
    TARBALL="$(mktemp -t lmjax-XXXXXX.tar.gz)"
    trap 'rm -f "$TARBALL"' EXIT
    if git -C "$SCRIPT_DIR" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
      (cd "$SCRIPT_DIR" && git ls-files -z --cached --others --exclude-standard |
        tar --null --files-from=- -czf "$TARBALL")
    else
      tar -C "$SCRIPT_DIR" --exclude=.venv --exclude=.git --exclude=runs -czf "$TARBALL" .
    fi
    log "copying $(du -h "$TARBALL" | cut -f1) checkout to ~/$REMOTE_DIR on workers $WORKER"
    gcloud compute tpus tpu-vm scp "$TARBALL" "$TPU:lmjax-src.tar.gz" "${GCLOUD_ARGS[@]}" --worker="$WORKER"
    ssh_workers "set -e; mkdir -p $q_dir && tar -xzf lmjax-src.tar.gz -C $q_dir && rm lmjax-src.tar.gz"
  fi
}

# ----------------------------------------------------------------------------------------------------- arguments

MODE="" TPU="" ZONE="" PROJECT="" WORKER="all" REPO="" REF="" REMOTE_DIR="lmjax" VENV="$HOME/lmjax-venv"
DETACH=0 INSTALL=1
ENVS=() COMMAND=()
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --local) MODE=local ;;
    --tpu) TPU="${2:?--tpu needs a name}"; MODE=remote; shift ;;
    --zone) ZONE="${2:?--zone needs a zone}"; shift ;;
    --project) PROJECT="${2:?--project needs a project}"; shift ;;
    --worker) WORKER="${2:?--worker needs all or an index}"; shift ;;
    --repo) REPO="${2:?--repo needs a URL}"; shift ;;
    --ref) REF="${2:?--ref needs a branch, tag or commit}"; shift ;;
    --dir) REMOTE_DIR="${2:?--dir needs a path}"; shift ;;
    --venv) VENV="${2:?--venv needs a path}"; shift ;;
    --env) [[ "${2:-}" == *=* ]] || die "--env needs KEY=VALUE"; ENVS+=("$2"); shift ;;
    --detach) DETACH=1 ;;
    --no-install) INSTALL=0 ;;
    --) shift; COMMAND=("$@"); break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

case "$MODE" in
  local)
    ((${#COMMAND[@]} == 0)) || die "--local only installs; run the command yourself or use --tpu"
    install_local "$VENV"
    ;;
  remote)
    [[ -n "$ZONE" ]] || die "--tpu needs --zone"
    [[ "$WORKER" == all || "$WORKER" =~ ^[0-9]+$ ]] || die "--worker must be 'all' or an index, got '$WORKER'"
    command -v gcloud >/dev/null 2>&1 || die "gcloud not found: install the Google Cloud CLI"
    GCLOUD_ARGS=(--zone="$ZONE")
    [[ -z "$PROJECT" ]] || GCLOUD_ARGS+=(--project="$PROJECT")
    # The venv path is expanded on the worker: keep a literal ~ or $HOME out of this machine's expansion.
    REMOTE_VENV="${VENV/#$HOME/\$HOME}"
    if ((INSTALL)); then
      ship_checkout
      log "installing on workers $WORKER"
      ssh_workers "cd $(printf '%q' "$REMOTE_DIR") && bash tpu_setup.sh --local --venv \"$REMOTE_VENV\""
    fi
    if ((${#COMMAND[@]})); then
      run="export LMJAX_DISTRIBUTED=1"
      ((${#ENVS[@]} == 0)) || run+=" $(printf '%q ' "${ENVS[@]}")"
      run+="; source \"$REMOTE_VENV/bin/activate\" && cd $(printf '%q' "$REMOTE_DIR") && "
      if ((DETACH)); then
        run+="mkdir -p logs && nohup $(printf '%q ' "${COMMAND[@]}")> logs/tpu_run.log 2>&1 < /dev/null & echo started on \$(hostname)"
      else
        run+="$(printf '%q ' "${COMMAND[@]}")"
      fi
      log "running on workers $WORKER: ${COMMAND[*]}"
      ssh_workers "$run"
    fi
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac
