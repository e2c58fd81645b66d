"""The studio's HTTP surfaces and command line, thin layers over core.

``server``          assembles the one ASGI app: Streamlit console at ``/``, Gradio at ``/label``, REST at ``/api``
``auth``            who is calling on every HTTP surface (local, team accounts, a Hugging Face sign-in)
``access``          what each role may see and do: the rule per REST route, console page, section and app event
``api``             the REST API: the app, its error handling, health and metrics; one router per resource:
                    ``api_labels`` (feedback, votes), ``api_contributions``, ``api_versions`` (report, safety, gate,
                    lineage), ``api_jobs``, ``api_judges``, ``api_benchmarks``, ``api_backup``; ``api_errors``: the
                    one error answer
``schemas``         REST request bodies, answer models and the error statuses each route declares
``label``           the labeling app's shell (theme, shortcuts, who is signed in) around its tabs: ``label_chat``
                    (chat, two candidates, vote, rate, edit; its sections' layout in ``label_sections``), ``arena``,
                    ``review``
``forms``           Gradio form controls generated from config dataclasses
``cli``             headless commands of ``launch.py`` (train, report, judge, safety-eval, gate, ...);
                    ``cli_backup`` (backup, restore) and ``cli_bench`` (bench)
"""
