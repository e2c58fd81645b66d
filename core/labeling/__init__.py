"""Labeling: who the labelers are, what they may do, and everything they record.

``users``        a person (or an AI labeler) as every surface sees them: id, name, role
``identity``     where users come from: the local user, a team users file or env, a Hugging Face login
``roles``        what a role means: roles, scopes, and refusing a scope (the rule table per surface is app/access.py)
``tokens``       personal API tokens for scripts (the REST API as their owner)
``votes``        conversations, candidate pairs, votes with ratings, thumbs and gold edits; ``OUTCOME_LABELS``
``feedback``     validation and storage of what people say about one answer
``queue``        prompt queues: admins import prompts, each served to ``overlap`` labelers
``review``       people check the pairs an AI labeled
``moderation``   admins redact items that must not stay in the studio
``agreement``    inter-annotator agreement (kappa, alpha) over items several people labeled
``analytics``    what was collected, by whom, how far labelers agree; ``labels_fingerprint`` for the pages' caches
"""
