"""Stage 2: fine-tune the stage-1 ViT encoder into a 16-d expression embedding on comparison triplets.

Later stages use only `load_encoder(path) -> ExpressionEncoder`.
"""
from expression_finetune.encoder import ExpressionEncoder, load_encoder
from expression_finetune.models import ExpressionViT, build_expression_vit, load_official_stage2, load_pretrained

__all__ = ["ExpressionEncoder", "ExpressionViT", "build_expression_vit", "load_encoder", "load_official_stage2",
           "load_pretrained"]
