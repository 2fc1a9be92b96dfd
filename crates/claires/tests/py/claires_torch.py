"""Our own restatement (no official code covers CLAIRES; its CLIP loss is compared with open_clip in tests/official_clip.rs): the CLAIRES model and loss in PyTorch, from the OpenAI-CLIP tutorial's
`CLIP.py` / `modules.py` that `shared/papers/grass-claires.md` §2 names as the template):
torchvision ResNet image encoder, Hugging Face BERT (MiniLM) text encoder with mean pooling, the
tutorial's projection head, and its soft-target CLIP loss. Imported by
`benches/py/step_claires.py` (the training-step bench's PyTorch peer).

  head(x) = LayerNorm(Dropout(Linear(GELU(p))) + p),  p = Linear(x)
  logits = T I^T / tau;  targets = softmax((I I^T + T T^T) / 2 * tau)
  L = mean_b (CE_soft(logits, targets) + CE_soft(logits^T, targets^T)) / 2
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class ProjectionHead(nn.Module):
    def __init__(self, d_in, d, dropout):
        super().__init__()
        self.projection = nn.Linear(d_in, d)
        self.fc = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, x):
        p = self.projection(x)
        return self.layer_norm(self.dropout(self.fc(F.gelu(p))) + p)


class ClairesNet(nn.Module):
    """Names of `claires::model::Claires`: `image.*` (torchvision), `text.*` (HF BERT, no pooler),
    `image_proj.*`, `text_proj.*`."""

    def __init__(self, layers, bert, embed_dim, dropout):
        super().__init__()
        import torchvision
        from transformers import BertConfig, BertModel

        self.image = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, layers)
        self.image.fc = nn.Identity()
        cfg = BertConfig(**bert, attention_probs_dropout_prob=bert["hidden_dropout_prob"])
        self.text = BertModel(cfg, add_pooling_layer=False)
        self.image_proj = ProjectionHead(512, embed_dim, dropout)
        self.text_proj = ProjectionHead(bert["hidden_size"], embed_dim, dropout)

    def embed_text(self, ids, mask):
        """Mean-pooled sentence features (sentence-transformers' pooling of MiniLM)."""
        h = self.text(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.to(h.dtype).unsqueeze(-1)
        return (h * m).sum(1) / m.sum(1).clamp_min(1e-9)

    def forward(self, x, ids, mask):
        return self.image_proj(self.image(x)), self.text_proj(self.embed_text(ids, mask))


def soft_clip_loss(image, text, tau):
    logits = text @ image.T / tau
    targets = F.softmax((image @ image.T + text @ text.T) / 2 * tau, dim=-1)
    texts_loss = (-targets * F.log_softmax(logits, dim=-1)).sum(1)
    images_loss = (-targets.T * F.log_softmax(logits.T, dim=-1)).sum(1)
    return ((images_loss + texts_loss) / 2.0).mean()
