"""The modelling code an exported BiMamba2 model directory ships (models/hf.py copies these files into it).

Each file imports only torch and transformers (and mamba_ssm's kernels when installed), so that
``AutoModelForCTC.from_pretrained(dir, trust_remote_code=True)`` works without this repository.
"""
