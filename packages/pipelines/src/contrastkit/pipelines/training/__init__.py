"""The training engine that pretraining and joint training both drive.

loop.run_training(config, task) is the loop; a task (task.TrainingTask: `pretrain.PretrainTask`,
`joint.JointTask`) says what is trained and reported. The loop's helpers, one concept each:
accelerator (the Accelerator), run_data (batches and monitor splits), model (model, optimizer,
schedule, random streams), running_sums (metrics row and epoch sums), monitor (kNN / online
classifier), resume (which checkpoint, does it fit, the state it holds), rng (random streams),
stop (SIGTERM / SIGINT / SIGHUP and the launcher's exit), run_lock (one writer per run folder),
nonfinite (the NaN / inf checks), command (the shared command line). Nothing here imports the tasks.
"""
