"""Export a checkpoint for serving: ``python scripts/export.py --ckpt_path CKPT_OR_RUN_DIR --format onnx|pt2
--output FILE``.

One input ``features`` (batch, n_features), one output ``predictions``, original units; the feature
names are in the file's metadata. Needs the ``[export]`` extra (``pip install 'linreg_pl[export]'``).
"""

from linreg_pl.commands import export

if __name__ == "__main__":
    export()
