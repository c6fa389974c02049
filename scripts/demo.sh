#!/usr/bin/env bash
# The CPU demo (README, command 1): a synthetic TED-LIUM 3 corpus spoken by espeak-ng, a small Wav2Vec2 trained
# from scratch as the attention teacher (Std), its BiMamba2 conversion distilled Target guided and then Hybrid,
# an Unguided BiMamba2 for comparison, each evaluated on the held-out test split; a table and plots at the end.
#
#   bash scripts/demo.sh                 # everything under output/demo (about 15 minutes on 2 idle CPU cores)
#   DEMO_ROOT=/tmp/demo bash scripts/demo.sh
#
# Rerunning reuses what is finished (corpus, prepared data, model dir, runs at their max_steps, evaluations);
# an interrupted run resumes from its latest checkpoint. `rm -rf output/demo` starts over. With CUDA available
# a bigger profile runs (more data, steps and batch). Needs Python >= 3.10 and PyPI; no root, no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${DEMO_ROOT:-output/demo}
PYTHON=${PYTHON:-python3}
STAGES=8
stage() { echo; echo "== $1/$STAGES $2 =="; }
skip() { echo "   (done already: $1)"; }

# --------------------------------------------------------------------------------------------------------------
stage 1 "install the requirements into .venv"
if ! .venv/bin/python -m pip --version > /dev/null 2>&1; then  # no venv yet, or a broken one
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    { echo "error: $PYTHON is $("$PYTHON" -V 2>&1); the demo needs Python >= 3.10 (PYTHON=python3.11 bash $0)" >&2; exit 1; }
  "$PYTHON" -m venv --clear .venv ||
    { echo "error: '$PYTHON -m venv' failed; on Debian/Ubuntu install python3-venv (apt-get install python3-venv)" >&2; exit 1; }
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
PY=.venv/bin/python
export WANDB_MODE=${WANDB_MODE:-offline} HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# Profiles. CPU: measured on 2 cores (see the report); CUDA: more voices, utterances and steps (not measured).
# Corpus: the closed ~50-word vocabulary (corpora/synth.py DEMO_WORDS) of synth's demo profile, with more talks
# (one espeak-ng voice each) of fewer segments: more voices for the same number of utterances.
if [ "$($PY -c 'import torch; print(torch.cuda.is_available())')" = "True" ]; then
  PROFILE=cuda
  TALKS="(1200, 20, 20)"; SEGMENTS="(10, 10)"
  BATCH="batch_size=32,batch_frame_limit=3.5e6,batch_quad_frame_limit=1e13"
  TEACHER_STEPS=3000; UNGUIDED_STEPS=3000; TARGET_STEPS=1000; HYBRID_STEPS=2000
  TEACHER_EVAL=250; EVAL_INTERVAL=250
else
  PROFILE=cpu
  TALKS="(300, 10, 10)"; SEGMENTS="(10, 10)"
  BATCH="batch_size=12,batch_frame_limit=1.2e6,batch_quad_frame_limit=1e12"
  TEACHER_STEPS=550; UNGUIDED_STEPS=250; TARGET_STEPS=150; HYBRID_STEPS=250
  TEACHER_EVAL=100; EVAL_INTERVAL=50  # dev evaluations (and checkpoints): the teacher's, the students'
fi
echo "profile: $PROFILE, output under $ROOT"

RAW=$ROOT/database/TEDLIUM_release-3
DATA=$ROOT/data/tedlium
W2V2=$ROOT/models/w2v2
RUNS=$ROOT/runs
mkdir -p "$ROOT"

# Hparams. The "pretrained" model is random, so the teacher and the Unguided student train from scratch: the CNN
# front end must learn (freeze_feature_encoder=False: a frozen random front end plateaus near 30% CER), at a high
# learning rate after a short warm-up, with no data warm-up and no dropout or SpecAugment (too few steps to
# overfit). The distilled students start from the teacher, whose front end they keep frozen, at a lower rate.
# Mamba2 for hidden 192: 3 heads of 64; chunk 64 as utterances are ~2 s = ~100 frames (a 256 chunk pads each to
# 256 frames and makes the BiMamba2 layers ~2.5x slower on CPU).
COMMON="asr_model_name=$W2V2,$BATCH,data_warmup_steps=0,final_lr=1e-4"
COMMON="$COMMON,hidden_dropout=0.0,activation_dropout=0.0,feat_proj_dropout=0.0,mask_time_prob=0.0"
SCRATCH="max_lr=5e-3,warmup_steps=100,freeze_feature_encoder=False"
MAMBA="asr_use_mamba=True,mamba_headdim=64,mamba_d_state=64,mamba_chunk_size=64"
DISTILL="max_lr=2e-3,warmup_steps=50,decay_steps=$((HYBRID_STEPS - 50)),freeze_feature_encoder=True"
DISTILL="$DISTILL,alpha_logits_distill_loss=1,asr_mamba_residual_inside=False"

# timed KEY CMD...: run CMD, add its wall seconds to $ROOT/timings.json under KEY (a resumed run adds the time
# of the command that finishes it to that of earlier completed ones; a killed command records nothing)
timed() {
  local key=$1 start end
  shift
  start=$(date +%s.%N)
  "$@"
  end=$(date +%s.%N)
  $PY - "$ROOT/timings.json" "$key" "$start" "$end" <<'EOF'
import json, sys
from pathlib import Path
path, key, start, end = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
timings = json.loads(path.read_text()) if path.is_file() else {}
timings[key] = timings.get(key, 0.0) + end - start
path.write_text(json.dumps(timings, indent=1) + "\n")
EOF
}

# --------------------------------------------------------------------------------------------------------------
stage 2 "synthesise the corpus (TED-LIUM 3 layout), prepare it, write the 'pretrained' model dir"
if [ -f "$RAW/synth.json" ]; then
  skip "$RAW"
else
  $PY - "$RAW" "$TALKS" "$SEGMENTS" <<'EOF'
import ast, os, sys
from corpora.synth import PROFILES, synth_tedlium
# the demo profile (closed vocabulary, its voices, little noise) with more talks: more voices, fewer segments each
profile = {**PROFILES["tedlium"]["demo"], "talks": ast.literal_eval(sys.argv[2]),
           "segments_per_talk": ast.literal_eval(sys.argv[3])}
synth_tedlium(sys.argv[1], seed=0, force=True, progress=False, workers=os.cpu_count() or 1, **profile)
EOF
fi
if [ -f "$DATA/vocab.json" ] && [ -f "$DATA/meta.train.txt" ] && [ -f "$DATA/meta.dev.txt" ] && [ -f "$DATA/meta.test.txt" ]; then
  skip "$DATA"
else
  $PY corpora/tedlium.py --src "$RAW" --out "$DATA"
fi
if [ -f "$W2V2/config.json" ] && [ -f "$W2V2/model.safetensors" ]; then
  skip "$W2V2"
else
  $PY -m models.presets demo --out "$W2V2"
fi

# run_done DIR STEPS: the run has its checkpoint at STEPS
run_done() { [ -f "$1/model.ckpt-$2" ]; }

# --------------------------------------------------------------------------------------------------------------
stage 3 "train the teacher (Std: attention, train.py)"
if run_done "$RUNS/teacher" "$TEACHER_STEPS"; then
  skip "$RUNS/teacher/model.ckpt-$TEACHER_STEPS"
else
  timed teacher $PY train.py --model-dir "$RUNS/teacher" --data-dir "$DATA" \
    --hparams="$COMMON,$SCRATCH,decay_steps=$((TEACHER_STEPS * 3 / 2))" \
    --max_steps "$TEACHER_STEPS" --eval_interval "$TEACHER_EVAL" --checkpoint_interval "$TEACHER_EVAL" \
    --project_name cald_demo
fi
TEACHER_CKPT=$RUNS/teacher/model.ckpt-$TEACHER_STEPS

# --------------------------------------------------------------------------------------------------------------
stage 4 "train the Unguided student (BiMamba2 from the pretrained model, no teacher, train.py)"
if run_done "$RUNS/unguided" "$UNGUIDED_STEPS"; then
  skip "$RUNS/unguided/model.ckpt-$UNGUIDED_STEPS"
else
  timed unguided $PY train.py --model-dir "$RUNS/unguided" --data-dir "$DATA" \
    --hparams="$COMMON,$SCRATCH,decay_steps=$((UNGUIDED_STEPS * 3 / 2)),$MAMBA" \
    --max_steps "$UNGUIDED_STEPS" --eval_interval "$EVAL_INTERVAL" --checkpoint_interval "$EVAL_INTERVAL" \
    --project_name cald_demo
fi

# --------------------------------------------------------------------------------------------------------------
# Target guided, then Hybrid: one run dir, one schedule over HYBRID_STEPS (as the paper's 40k of 90k steps)
distill() {  # distill ALPHA_LAYER MAX_STEPS
  $PY train_distill.py --model-dir "$RUNS/target_guided" --data-dir "$DATA" \
    --hparams="$COMMON,$DISTILL,$MAMBA,alpha_layer_distill_loss=$1" \
    --teacher_path "$TEACHER_CKPT" --max_steps "$2" --eval_interval "$EVAL_INTERVAL" \
    --checkpoint_interval "$EVAL_INTERVAL" --project_name cald_demo
}
stage 5 "distil Target guided (BiMamba2 from the teacher, layer + logits distillation, train_distill.py)"
if run_done "$RUNS/target_guided" "$TARGET_STEPS"; then
  skip "$RUNS/target_guided/model.ckpt-$TARGET_STEPS"
else
  timed target distill 15 "$TARGET_STEPS"
fi

stage 6 "continue as Hybrid (the same command with alpha_layer_distill_loss=0: it resumes)"
if run_done "$RUNS/target_guided" "$HYBRID_STEPS"; then
  skip "$RUNS/target_guided/model.ckpt-$HYBRID_STEPS"
else
  timed hybrid_phase distill 0 "$HYBRID_STEPS"
fi

# --------------------------------------------------------------------------------------------------------------
stage 7 "evaluate every model on the held-out test split (infer.py)"
evaluate() {  # evaluate KEY CHECKPOINT
  local out=$ROOT/eval/$1
  if [ -f "$out/metrics.json" ] && grep -q "\"checkpoint\": \"$2\"" "$out/metrics.json"; then
    skip "$out/metrics.json"
    return
  fi
  mkdir -p "$out"
  if ! $PY infer.py --model-path "$2" --output-path "$out" --data-dir "$DATA" --eval_meta meta.test.txt \
      --hparams asr_use_flash_attn=False > "$out/infer.log" 2>&1; then
    tail -n 30 "$out/infer.log" >&2
    echo "infer.py failed on $2: see $out/infer.log" >&2
    exit 1
  fi
  echo "   $1: $2 -> $out/metrics.json"
}
evaluate teacher "$TEACHER_CKPT"
evaluate unguided "$RUNS/unguided/model.ckpt-$UNGUIDED_STEPS"
evaluate target "$RUNS/target_guided/model.ckpt-$TARGET_STEPS"
evaluate hybrid "$RUNS/target_guided/model.ckpt-$HYBRID_STEPS"

# --------------------------------------------------------------------------------------------------------------
stage 8 "report: table and plots"
$PY - "$ROOT/info.json" "$DATA" <<EOF
import json, sys
from pathlib import Path
lines = (Path(sys.argv[2]) / "meta.train.txt").read_text().splitlines()
info = {"profile": "$PROFILE", "wall_seconds": $SECONDS, "train_utterances": len(lines),
        "train_hours": round(sum(int(l.split("|")[1]) for l in lines) / 16000 / 3600, 2),
        "talks": "$TALKS", "segments_per_talk": "$SEGMENTS",
        "steps": {"teacher": $TEACHER_STEPS, "unguided": $UNGUIDED_STEPS, "target": $TARGET_STEPS,
                  "hybrid": $HYBRID_STEPS},
        "hparams": {"common": "$COMMON", "scratch": "$SCRATCH", "mamba": "$MAMBA", "distill": "$DISTILL"}}
Path(sys.argv[1]).write_text(json.dumps(info, indent=1) + "\n")
EOF
$PY scripts/demo_report.py --root "$ROOT" --info "$ROOT/info.json"
