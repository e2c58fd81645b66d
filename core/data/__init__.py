"""The data step of the loop: labels in, training sets out.

kinds          the dataset-kind registry (preference, reward, unpaired, sft, prompts): label, unit, row builder
filters        which labels count (`Filters`), parsed from JSON and validated; the console's filter choices
signals        the SQL that reads votes, thumbs, ratings, gold edits and feedback with the filters applied
trainsets      the builders: labels -> TRL rows / datasets, with skip statistics
split          the held-out evaluation split (a fixed hash of the prompt), shared with core.compare
job_data       a job's rows: training rows, held-out rows evaluated while training, stats and content hash
import_files   dataset import, step 1: read a file into numbered records
import_formats dataset import, step 2: detect its shape and parse the rows (the dry run)
datasets_io    dataset import, step 3: write the parsed items like chat labels, in one transaction
"""
