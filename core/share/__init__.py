"""Share: what leaves the studio, the last step of the loop.

``exports``      local export folders (adapter, merged, GGUF, bitsandbytes, datasets), their table, zips
``versions``     what an export reads of a policy version (row, files, base model, tokenizer, merged model)
``cards``        the model and dataset cards (README.md) and the run record they are written from
``curves``       the training-curves image of a model card
``gguf_export``  the GGUF writer and Ollama Modelfile
``hub``          pushes to the Hugging Face Hub, the adapter manifest, Hub errors
``lineage``      the chain behind a version: labels snapshot -> job -> evidence -> exports and pushes
``backup``       snapshots of the data dir in a Hub dataset repo or a directory, and the restore on an empty disk
``backup_service`` the background backup: on a timer when something changed, after jobs, on demand, at shutdown
"""
