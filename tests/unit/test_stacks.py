from rafter._diagnose.stacks import locate, single_out

WAITING = '''Current thread 0x00007f (most recent call first):
  File "/venv/lib/python3.11/site-packages/torch/distributed/distributed_c10d.py", line 3252 in all_reduce
  File "/venv/lib/python3.11/site-packages/torch/distributed/c10d_logger.py", line 83 in wrapper
  File "/home/u/train.py", line 20 in train_func
  File "/x/rafter/_worker/bootstrap.py", line 151 in run_worker
'''
SLEEPING = '''Thread 0x00007e (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 320 in wait

Current thread 0x00007f (most recent call first):
  File "/home/u/train.py", line 14 in train_func
  File "/x/rafter/_worker/bootstrap.py", line 151 in run_worker
'''


def test_locate_and_single_out():
    loc = {0: locate(WAITING), 1: locate(WAITING), 2: locate(SLEEPING)}
    assert loc[0].collective == "all_reduce" and loc[0].user_frame.where() == "train.py:20 in train_func"
    assert loc[2].collective is None and loc[2].user_frame.where() == "train.py:14 in train_func"
    culprits, summary = single_out(loc)
    assert culprits == [2]
    assert "ranks 0, 1 waiting in all_reduce" in summary and "rank 2 at train.py:14 in train_func" in summary


def test_everyone_in_the_same_collective_has_no_single_culprit():
    culprits, summary = single_out({0: locate(WAITING), 1: locate(WAITING)})
    assert culprits == [] and summary == "ranks 0, 1 waiting in all_reduce"
