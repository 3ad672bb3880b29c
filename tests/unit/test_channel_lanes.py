"""The two lanes of a local worker's channel: metrics-only reports on their own socket (read by the driver
at most every METRICS_LANE_S), everything else on the main one, and the driver sees them in the order
they were sent. Real sockets, real threads."""

import socket
import threading

from rafter._backends.frames import Lanes
from rafter._worker.channel import Channel


def pair():
    main_w, main_r = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    lane_w, lane_r = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    main_r.setblocking(False)
    lane_r.setblocking(False)
    return Channel(main_w.detach(), lane_w.detach()), Lanes(main_r, lane_r)


def test_messages_of_both_lanes_come_out_in_the_order_sent():
    channel, lanes = pair()
    sent = []
    for i in range(200):
        if i % 7 == 3:
            channel.send(("main", i))
        else:
            channel.send_metrics(("metrics", i))
        sent.append(i)
    # The driver reads the main lane first, as it does when that wakes it: the metrics sent before a
    # main message are read with it, those sent after wait for the metrics lane's own turn.
    got = [m[1] for m in lanes.read_main()]
    got += [m[1] for m in lanes.read_metrics()]
    got += [m[1] for m in lanes.read_main()]
    assert got == sent


def test_a_main_message_is_held_until_the_metrics_sent_before_it_are_read():
    channel, lanes = pair()
    channel.send_metrics(("metrics", 1))
    channel.send(("main", 2))
    channel.send_metrics(("metrics", 3))
    assert [m[1] for m in lanes.read_main()] == [1, 2, 3]  # all three were in the buffers
    channel.send(("main", 4))
    channel.send_metrics(("metrics", 5))
    assert [m[1] for m in lanes.read_metrics()] == []  # 5 follows 4, which is unread
    assert [m[1] for m in lanes.read_main()] == [4, 5]


def test_two_threads_reporting_keep_one_order():
    channel, lanes = pair()

    def work(tag, lazy):
        for i in range(300):
            (channel.send_metrics if lazy else channel.send)((tag, i))

    threads = [threading.Thread(target=work, args=("a", True)), threading.Thread(target=work, args=("b", False))]
    for t in threads:
        t.start()
    got = []
    while True:  # read as the driver does, while they send (a lane holds a few hundred small frames)
        done = not any(t.is_alive() for t in threads)
        more = lanes.read_main() + lanes.read_metrics()
        got += more
        if done and not more:
            break
    for t in threads:
        t.join()
    assert len(got) == 600
    for tag in "ab":
        assert [i for g, i in got if g == tag] == list(range(300))  # each thread's messages in its order


def test_what_was_sent_before_the_sender_went_away_is_all_read():
    channel, lanes = pair()
    for i in range(50):
        channel.send_metrics(("metrics", i))
    channel.close()  # as if the worker died: its sockets close, the bytes stay in the driver's buffers
    got = lanes.read_main()
    assert lanes.main.eof and lanes.metrics.eof
    assert [m[1] for m in got] == list(range(50))


def test_without_a_metrics_lane_frames_carry_no_number():
    """The Ray backend's workers have one socket: the driver reads plain frames from it."""
    from rafter._backends.frames import FrameReader

    w, r = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r.setblocking(False)
    channel = Channel(w.detach())
    channel.send(("main", 1))
    channel.send_metrics(("metrics", 2))
    assert FrameReader(r).read() == [("main", 1), ("metrics", 2)]  # both in the one recv


def test_a_full_metrics_lane_sends_on_the_main_one_and_never_blocks_the_worker():
    """The worker's sends on the metrics lane never wait for the driver: what doesn't fit (here 400
    reports with nobody reading; the lane holds ~280) goes on the main lane, in order."""
    channel, lanes = pair()
    for i in range(400):
        channel.send_metrics(("metrics", i))
    held = len(lanes.read_metrics())
    assert 0 < held < 400  # the lane alone: the first part, up to the first report that did not fit
    rest = lanes.read_main() + lanes.read_metrics()
    assert held + len(rest) == 400 and rest[-1] == ("metrics", 399)


def test_a_report_too_big_for_the_lane_goes_on_the_main_one():
    channel, lanes = pair()
    channel.send_metrics(("metrics", "x" * 200_000))
    channel.send_metrics(("metrics", 2))
    got = []
    for _ in range(10):  # one recv per wake: the big frame takes a few
        got += lanes.read_main()
    assert [len(m[1]) if isinstance(m[1], str) else m[1] for m in got] == [200_000, 2]


def test_one_read_of_the_lane_takes_a_bounded_number_of_reports_and_the_rest_keeps_its_order():
    channel, lanes = pair()
    for i in range(250):
        channel.send_metrics(("metrics", i))
    channel.send(("main", 250))
    first = lanes.metrics.read(most=100)
    assert len(first) == 100  # a flooding rank can't keep the driver in one read
    got = lanes._release(first)
    while len(got) < 251:
        got += lanes.read_main() + lanes.read_metrics()
    assert [m[1] for m in got] == list(range(251))
