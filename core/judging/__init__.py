"""Judging: AI labelers beside the people, each checked against them before its labels count.

``judges``        an AI judge (the studio's model, a reward model or an OpenAI-compatible endpoint) says which of
                  two answers is better, in both orders; calibration against people's votes (kappa floor)
``runs``          judge runs: a judge labels the pairs no person voted on, in the background, resumable
``constitution``  constitutional self-critique: the policy critiques and revises its own answers against written
                  principles; the revisions become pairs people review
"""
