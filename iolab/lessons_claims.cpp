// The experiments of iolab lessons, one per claim of the course. Each runs real iolab command
// lines in this process (compare, scale --idle, bench; the load generator for the WORK stall,
// since iolab demo writes no file), reads the JSON they wrote, draws its figure with the
// harness's charts and judges the claim from the numbers: the page teaches what this machine
// measured, not what the course says.

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/stop.hpp"
#include "iolab/lab.hpp"
#include "iolab/lessons.hpp"
#include "iolab/lessons_tools.hpp"

namespace iolab {

void judge(Lesson& l, Verdict v, Words text) {
    l.verdict = v;
    l.verdict_text = std::move(text);
}

namespace {

using namespace lesson;

// Sentences that several claims share.
Words no_figures() {
    return en_zh("The experiment did not produce its figures.", "实验没有得到它需要的数字。");
}
// `what` ("compare") left its figures out; its log says why.
Words no_figures_from(const std::string& what, const std::string& what_zh) {
    return en_zh(what + " did not produce its figures (see log.txt).",
                 what_zh + "没有得到它需要的数字（见 log.txt）。");
}
Words counted_by_tracepoint() {
    return en_zh("Counted by the kernel's tracepoint.", "系统调用次数由内核的 tracepoint 统计。");
}
Words closed_loop_throughput() {
    return en_zh("Throughput, closed loop.", "吞吐量，闭环负载。");
}
const std::string& in_chinese(const Words& w) {
    auto it = w.find(kChinese);
    return it != w.end() ? it->second : w.at("en");
}

void two_phases(LessonRun& run, Lesson& l) {
    TimelineResult blocking =
        timeline_of(run, l, "01_blocking", "default",
                    en_zh("01_blocking under three clients: the one thread sleeps inside recv "
                          "until the slow client's last piece comes (the split marks the moment "
                          "it was sent), and the other two wait their turn.",
                          "01_blocking 服务三个客户端：唯一的线程睡在 recv 里，直到慢客户端的"
                          "最后一段数据到来（分割处是这段数据发出的时刻），另外两个客户端只能"
                          "排队等着。"));
    TimelineResult epoll =
        timeline_of(run, l, "05_epoll", "default",
                    en_zh("05_epoll under the same clients: it waits in epoll_wait, and each "
                          "recv only copies what is already there.",
                          "05_epoll 服务同样的三个客户端：它在 epoll_wait 里等待，每次 recv "
                          "只拷贝已经到达的数据。"));
    auto us = [](const std::optional<double>& v) { return v ? *v : -1.0; };
    l.numbers.push_back({en_zh("01_blocking: the slow client's recv waited (phase 1)",
                               "01_blocking：慢客户端的 recv 等了多久（第一阶段）"),
                         measured(us(blocking.blocking_recv_wait_us) / 1000, "%.1f ms")});
    l.numbers.push_back({en_zh("01_blocking: from the client's send to recv's return (phase 2)",
                               "01_blocking：从客户端发送到 recv 返回（第二阶段）"),
                         measured(us(blocking.blocking_recv_copy_us), "%.0f us")});
    l.numbers.push_back({en_zh("longest single read call, 01_blocking and 05_epoll",
                               "耗时最长的一次读调用，01_blocking 和 05_epoll"),
                         en_zh(text(blocking.longest_read_us / 1000, "%.1f ms") + ", " +
                                   text(epoll.longest_read_us, "%.0f us"),
                               text_zh(blocking.longest_read_us / 1000, "%.1f ms") + "，" +
                                   text_zh(epoll.longest_read_us, "%.0f us"))});
    if (!blocking.ok) {
        judge(l, Verdict::not_measured,
              en_zh("iolab timeline 01_blocking failed: " + blocking.why,
                    "iolab timeline 01_blocking 失败：" + blocking.why));
        return;
    }
    bool holds = blocking.blocked_in_read && blocking.blocking_recv_wait_us &&
                 blocking.blocking_recv_copy_us && *blocking.blocking_recv_wait_us >= 1000;
    judge(l, holds ? Verdict::holds : Verdict::does_not_hold,
          en_zh("One recv call of 01_blocking held both phases: it slept " +
                    text(us(blocking.blocking_recv_wait_us) / 1000, "%.1f ms") +
                    " before the data was sent, then returned " +
                    text(us(blocking.blocking_recv_copy_us), "%.0f us") +
                    " after it, with the bytes copied; the thread could do nothing else "
                    "meanwhile. " +
                    (epoll.ok ? "05_epoll's longest recv took " +
                                    text(epoll.longest_read_us, "%.0f us") +
                                    ": its waiting happens in epoll_wait."
                              : std::string()),
                "01_blocking 的一次 recv 调用包含了两个阶段：数据发出之前它已经睡了 " +
                    text_zh(us(blocking.blocking_recv_wait_us) / 1000, "%.1f ms") +
                    "，数据发出后又过了 " + text_zh(us(blocking.blocking_recv_copy_us), "%.0f us") +
                    " 才带着拷贝好的字节返回；这期间线程什么别的事都做不了。" +
                    (epoll.ok ? "05_epoll 最长的一次 recv 只用了 " +
                                    text_zh(epoll.longest_read_us, "%.0f us") +
                                    "：它的等待发生在 epoll_wait 里。"
                              : std::string())));
}

void uring_phases(LessonRun& run, Lesson& l) {
    TimelineResult uring = timeline_of(
        run, l, "09_proactor", "default",
        en_zh("09_proactor under three clients: the thread submits reads and sleeps in "
              "io_uring_enter; the kernel's lane shows each read and send completing by itself.",
              "09_proactor 服务三个客户端：线程提交读请求后睡在 io_uring_enter 里；内核那条"
              "泳道上可以看到每个读和发送由内核自己完成。"));
    Results r = compare(run, l, "09_proactor,05_epoll", "1,100");
    CallCounts calls = traced_calls(run, "09_proactor", 50);
    std::vector<std::string> names = {"09_proactor", "05_epoll"};
    add_chart(run, l, "syscalls.svg",
              {"System calls per request", "connections", "syscalls per request", true, false,
               note_of(run)},
              series_of(r, names, "syscalls_per_req"), counted_by_tracepoint());
    for (const std::string& v : names) {
        for (int c : {1, 100}) {
            l.numbers.push_back(
                {en_zh(v + ", " + std::to_string(c) + " connection(s)",
                       v + "，" + std::to_string(c) + " 个连接"),
                 en_zh(text(r.get(v, c, "req_per_s"), "%.0f req/s") + ", " +
                           text(r.get(v, c, "syscalls_per_req"), "%.2f syscalls/req") + ", " +
                           text(r.get(v, c, "uring_ops_per_req"), "%.2f io_uring completions/req"),
                       text_zh(r.get(v, c, "req_per_s"), "%.0f req/s") + "，每个请求 " +
                           text_zh(r.get(v, c, "syscalls_per_req"), "%.2f") + " 次系统调用、" +
                           text_zh(r.get(v, c, "uring_ops_per_req"), "%.2f") +
                           " 个 io_uring 完成事件")});
        }
    }
    l.numbers.push_back({en_zh("09_proactor's traced calls per PING, one connection",
                               "09_proactor 每个 PING 记录到的调用（一个连接）"),
                         calls_text(calls)});
    if (uring.cannot_run || r.skipped("09_proactor").rfind("unavailable", 0) == 0) {
        std::string why = uring.why.empty() ? r.skipped("09_proactor") : uring.why;
        judge(l, Verdict::cannot_show,
              en_zh("io_uring is refused on this machine: " + why,
                    "这台机器拒绝了 io_uring：" + why));
        return;
    }
    double calls_uring = r.get("09_proactor", 100, "syscalls_per_req");
    double calls_epoll = r.get("05_epoll", 100, "syscalls_per_req");
    double ops = r.get("09_proactor", 100, "uring_ops_per_req");
    double copies = calls_of(calls, {"recv", "send", "read", "write"});
    if (!calls.ran || calls_uring < 0 || calls_epoll < 0) {
        judge(l, Verdict::not_measured, no_figures());
        return;
    }
    bool holds = copies == 0 && ops >= 1.5 && calls_uring < calls_epoll;
    double one_uring = r.get("09_proactor", 1, "req_per_s");
    double one_epoll = r.get("05_epoll", 1, "req_per_s");
    judge(l, holds ? Verdict::holds : Verdict::does_not_hold,
          en_zh("09_proactor made no recv or send call of its own (" + text(copies, "%.0f") +
                    " traced): at 100 connections the kernel posted " + text(ops, "%.2f") +
                    " completions per request, reads and sends both done in the kernel, for " +
                    text(calls_uring, "%.2f") + " system calls per request against 05_epoll's " +
                    text(calls_epoll, "%.2f") + ". With one connection it served " +
                    ratio_text(one_uring, one_epoll) +
                    " the requests of 05_epoll: fewer calls are not a faster single round trip.",
                "09_proactor 自己没有调用过 recv 或 send（记录到 " + text_zh(copies, "%.0f") +
                    " 次）：100 个连接时，内核为每个请求投递了 " + text_zh(ops, "%.2f") +
                    " 个完成事件，读和发送都在内核里完成，每个请求只有 " +
                    text_zh(calls_uring, "%.2f") + " 次系统调用，05_epoll 则是 " +
                    text_zh(calls_epoll, "%.2f") +
                    " 次。只有一个连接时，它处理的请求数是 "
                    "05_epoll 的 " +
                    ratio_zh(one_uring, one_epoll) + "：调用次数少，并不等于单次往返更快。"));
}

// --- 2. One thread (or process) per connection ------------------------------------------------

void thread_per_connection(LessonRun& run, Lesson& l) {
    std::string points = run.quick ? "10,100,250" : "10,100,1000";
    std::vector<int> n = parse_int_list(points);
    std::vector<std::string> names = {"02_thread_per_conn", "02_process_per_conn", "05_epoll"};
    // An open loop at a rate every variant keeps up with, so that what changes from point to point
    // is the number of connections alone; the longer warm-up lets a thread- or process-starting
    // server have one for every connection before the window.
    CompareExtra extra;
    extra.warmup = run.quick ? 0.5 : 1.0;
    extra.rate = 2000;
    Results r = compare(run, l, "02_thread_per_conn,02_process_per_conn,05_epoll", points, extra);
    std::string note = note_of(run);
    add_chart(run, l, "tasks.svg",
              {"Kernel tasks (threads, every process's) against connections", "connections",
               "threads (log scale)", true, true, note},
              series_of(r, names, "threads"),
              en_zh("One kernel task per connection for 02, one for all of them for 05_epoll.",
                    "02 每个连接一个内核任务，05_epoll 所有连接共用一个。"));
    add_chart(run, l, "memory.svg",
              {"Server memory (PSS) per connection", "connections", "KiB per connection", true,
               false, note},
              series_of(r, names, "rss_per_conn_kib"),
              en_zh("Memory per connection: the growth of the server's proportional set size.",
                    "每个连接占的内存：服务器的比例集大小（PSS）随连接增长的部分。"));
    add_chart(run, l, "p99.svg",
              {"p99 latency against connections, 2000 requests/s in all", "connections",
               "p99 latency (us, log scale)", true, true, note},
              series_of(r, names, "p99_us"),
              en_zh("p99 latency of the replies.", "回复的 p99 延迟。"));

    int lo = n.front(), hi = n.back();
    auto per_conn_tasks = [&](const std::string& v) {
        double a = r.get(v, lo, "threads"), b = r.get(v, hi, "threads");
        double held = r.get(v, hi, "conns_connected") - r.get(v, hi, "refused");
        if (a < 0 || b < 0 || held <= lo) {
            return -1.0;
        }
        return (b - a) / (held - lo);
    };
    double thr = per_conn_tasks("02_thread_per_conn");
    double proc = per_conn_tasks("02_process_per_conn");
    double epoll = per_conn_tasks("05_epoll");
    double kib_thr = r.get("02_thread_per_conn", hi, "rss_per_conn_kib");
    double kib_epoll = r.get("05_epoll", hi, "rss_per_conn_kib");
    for (const std::string& v : names) {
        l.numbers.push_back(
            {en_zh(v + " at " + std::to_string(hi) + " connections",
                   v + "，" + std::to_string(hi) + " 个连接"),
             en_zh(text(r.get(v, hi, "threads"), "%.0f threads") + ", " +
                       text(r.get(v, hi, "rss_per_conn_kib"), "%.1f KiB/conn") + ", p99 " +
                       text(r.get(v, hi, "p99_us"), "%.0f us") + ", refused " +
                       text(r.get(v, hi, "refused"), "%.0f"),
                   text_zh(r.get(v, hi, "threads"), "%.0f") + " 个线程，每个连接 " +
                       text_zh(r.get(v, hi, "rss_per_conn_kib"), "%.1f KiB") + "，p99 " +
                       text_zh(r.get(v, hi, "p99_us"), "%.0f us") + "，拒绝 " +
                       text_zh(r.get(v, hi, "refused"), "%.0f") + " 个")});
    }
    l.numbers.push_back(
        {en_zh("new tasks per connection held (02_thread, 02_process, 05_epoll)",
               "每多持有一个连接新增的任务数（02_thread、02_process、05_epoll）"),
         en_zh(
             text(thr, "%.2f") + ", " + text(proc, "%.2f") + ", " + text(epoll, "%.2f"),
             text_zh(thr, "%.2f") + "，" + text_zh(proc, "%.2f") + "，" + text_zh(epoll, "%.2f"))});
    if (thr < 0 || kib_thr < 0 || kib_epoll < 0) {
        judge(l, Verdict::not_measured, no_figures_from("The sweep", "这次扫描"));
        return;
    }
    double mem_ratio = kib_thr / std::max(kib_epoll, 0.1);
    double procs_hi = r.get("02_process_per_conn", hi, "processes");
    bool holds = thr >= 0.8 && mem_ratio >= 1.5;
    double p99_thr = r.get("02_thread_per_conn", hi, "p99_us");
    double p99_epoll = r.get("05_epoll", hi, "p99_us");
    double p99_proc = r.get("02_process_per_conn", hi, "p99_us");
    std::string conns = std::to_string(hi);
    judge(l, holds ? Verdict::holds : Verdict::does_not_hold,
          en_zh("Each connection cost 02_thread_per_conn " + text(thr, "%.2f") +
                    " new threads, against " + text(epoll, "%.2f") + " for 05_epoll; at " + conns +
                    " connections a threaded connection held " + text(kib_thr, "%.1f KiB") + " (" +
                    text(mem_ratio, "%.1fx") + " 05_epoll's " + text(kib_epoll, "%.1f KiB") +
                    ") and its p99 was " + text(p99_thr, "%.0f us") + " against " +
                    text(p99_epoll, "%.0f us") + ". 02_process_per_conn had " +
                    text(procs_hi, "%.0f") + " processes for " + conns + " clients, p99 " +
                    text(p99_proc, "%.0f us") + ".",
                "02_thread_per_conn 每多一个连接就多 " + text_zh(thr, "%.2f") +
                    " 个线程，05_epoll 是 " + text_zh(epoll, "%.2f") + " 个；" + conns +
                    " 个连接时，线程服务器的每个连接占 " + text_zh(kib_thr, "%.1f KiB") +
                    "（是 05_epoll 的 " + text_zh(kib_epoll, "%.1f KiB") + " 的 " +
                    text_zh(mem_ratio, "%.1fx") + "），p99 是 " + text_zh(p99_thr, "%.0f us") +
                    "，05_epoll 是 " + text_zh(p99_epoll, "%.0f us") + "。02_process_per_conn 为 " +
                    conns + " 个客户端开了 " + text_zh(procs_hi, "%.0f") + " 个进程，p99 是 " +
                    text_zh(p99_proc, "%.0f us") + "。"));
    l.notes = en_zh(
        "PSS counts the pages the tasks touched, not the kernel's own per-task memory (each "
        "thread also has a kernel stack of 16 KiB, outside PSS), so the real gap is larger. "
        "02_process_per_conn stops at its documented cap, --max-procs 256: past it, clients are "
        "refused.",
        "PSS 只统计各个任务实际用到的页，不包括内核为每个任务另外占的内存（每个线程还有一个 "
        "16 KiB 的内核栈，不算在 PSS 里），所以真实的差距更大。02_process_per_conn 到文档写明的"
        "上限 --max-procs 256 就不再开进程：超过之后，新来的客户端会被拒绝。");
}

// --- 3. A pool caps the threads ----------------------------------------------------------------

void thread_pool(LessonRun& run, Lesson& l) {
    std::string points = run.quick ? "2,4,8,16" : "2,4,8,16,32";
    std::vector<int> n = parse_int_list(points);
    Results r = compare(run, l, "02_thread_per_conn_pool", points);
    const std::string v = "02_thread_per_conn_pool";
    Series threads{"threads", {}}, waiting{"clients without a reply or refused", {}},
        served{"clients served", {}};
    double tmin = 1e9, tmax = -1;
    for (int c : n) {
        double t = r.get(v, c, "threads");
        double stuck =
            std::max(0.0, r.get(v, c, "unanswered")) + std::max(0.0, r.get(v, c, "refused"));
        if (t >= 0) {
            tmin = std::min(tmin, t);
            tmax = std::max(tmax, t);
        }
        threads.points.emplace_back(c, t);
        waiting.points.emplace_back(c, stuck);
        served.points.emplace_back(c, std::max(0.0, c - stuck));
        l.numbers.push_back(
            {en_zh(std::to_string(c) + " connections", std::to_string(c) + " 个连接"),
             en_zh(text(t, "%.0f threads") + ", " + text(stuck, "%.0f") +
                       " clients waiting or refused, " +
                       text(r.get(v, c, "req_per_s"), "%.0f req/s"),
                   text_zh(t, "%.0f") + " 个线程，" + text_zh(stuck, "%.0f") +
                       " 个客户端在排队或被拒绝，" +
                       text_zh(r.get(v, c, "req_per_s"), "%.0f req/s"))});
    }
    add_chart(run, l, "pool.svg",
              {"02_thread_per_conn_pool (--threads 4): who is served", "connections",
               "threads / clients", true, false, note_of(run)},
              {threads, served, waiting},
              en_zh("Threads stay fixed; past the pool's size the extra clients wait in its "
                    "queue (no reply within the window) or are refused.",
                    "线程数固定不变；超过线程池的大小后，多出来的客户端在它的队列里等"
                    "（在测量窗口内收不到回复），或者被拒绝。"));
    int hi = n.back();
    double stuck_hi = waiting.points.back().second;
    if (tmax < 0) {
        judge(l, Verdict::not_measured, no_figures_from("The pool", "线程池"));
        return;
    }
    bool flat = tmax - tmin <= 1;
    bool queued = stuck_hi >= 0.75 * (hi - 4);
    std::string lo_text = std::to_string(n.front()), hi_text = std::to_string(hi);
    std::string beyond = std::to_string(hi - 4);
    judge(l, flat && queued ? Verdict::holds : Verdict::does_not_hold,
          en_zh("The server kept " + text(tmin, "%.0f") + " to " + text(tmax, "%.0f") +
                    " threads from " + lo_text + " to " + hi_text + " connections; at " + hi_text +
                    " connections " + text(stuck_hi, "%.0f") + " clients (of the " + beyond +
                    " beyond the 4 workers) got no reply or were refused.",
                "连接数从 " + lo_text + " 增加到 " + hi_text + " 个，服务器始终只有 " +
                    text_zh(tmin, "%.0f") + " 到 " + text_zh(tmax, "%.0f") + " 个线程；" + hi_text +
                    " 个连接时，4 个工作线程之外的 " + beyond + " 个客户端中，有 " +
                    text_zh(stuck_hi, "%.0f") + " 个没有收到回复或被拒绝。"));
    l.notes = en_zh(
        "A worker keeps its connection for the connection's whole life, so a waiting "
        "client is served only when another leaves; the pool refuses with ERR server "
        "busy once its queue has not moved for a second, longer than a quick window.",
        "一个工作线程在连接的整个生命周期里都守着这个连接，所以排队的客户端要等别的客户端离开"
        "才会被服务；队列一秒钟没有动静，线程池才用 ERR server busy 拒绝，这比快速运行的测量"
        "窗口还长。");
}

// --- 4. Busy polling burns a core while idle ---------------------------------------------------

void busy_polling(LessonRun& run, Lesson& l) {
    Results poll = bench(run, l, "03_nonblocking_poll", 10);
    Results epoll = bench(run, l, "05_epoll", 10);
    double busy = poll.doc.contains("idle") ? num(poll.doc["idle"], "cpu_pct") : -1;
    double calm = epoll.doc.contains("idle") ? num(epoll.doc["idle"], "cpu_pct") : -1;
    auto cpu_req = [](const Results& r) {
        return r.doc.contains("results") && !r.doc["results"].empty()
                   ? num(r.doc["results"][0], "server_cpu_us_per_req")
                   : -1;
    };
    add_chart(
        run, l, "idle_cpu.svg",
        {"Server CPU with no client at all (1 s)", "", "% of one core", false, false, note_of(run)},
        bars({{"03_nonblocking_poll", busy}, {"05_epoll", calm}}),
        en_zh("CPU used by a server that nobody talks to.",
              "没有任何客户端访问时服务器用掉的 CPU。"));
    l.numbers.push_back(
        {en_zh("idle CPU, 03_nonblocking_poll", "空闲时的 CPU，03_nonblocking_poll"),
         en_zh(text(busy, "%.1f%% of a core"), "一个核的 " + text_zh(busy, "%.1f%%"))});
    l.numbers.push_back(
        {en_zh("idle CPU, 05_epoll", "空闲时的 CPU，05_epoll"),
         en_zh(text(calm, "%.2f%% of a core"), "一个核的 " + text_zh(calm, "%.2f%%"))});
    l.numbers.push_back(
        {en_zh("server CPU per request under load (03, 05)",
               "有负载时服务器每个请求的 CPU（03、05）"),
         en_zh(text(cpu_req(poll), "%.2f us") + ", " + text(cpu_req(epoll), "%.2f us"),
               text_zh(cpu_req(poll), "%.2f us") + "，" + text_zh(cpu_req(epoll), "%.2f us"))});
    if (busy < 0 || calm < 0) {
        judge(l, Verdict::not_measured,
              en_zh("bench did not measure the idle CPU (see log.txt).",
                    "bench 没有测到空闲时的 CPU（见 log.txt）。"));
        return;
    }
    // On a machine shared with other work the busy loop gets only its share of the core, which
    // is why the bar is at 30%: a server that sleeps in the kernel stays near 0 whatever else runs.
    judge(l, busy >= 30 && calm < 5 ? Verdict::holds : Verdict::does_not_hold,
          en_zh("Idle, 03_nonblocking_poll used " + text(busy, "%.0f%%") +
                    " of a core asking sockets that had nothing; 05_epoll, asleep in epoll_wait, "
                    "used " +
                    text(calm, "%.2f%%") + ".",
                "空闲时，03_nonblocking_poll 不停地询问没有数据的套接字，用掉了一个核的 " +
                    text_zh(busy, "%.0f%%") + "；05_epoll 睡在 epoll_wait 里，只用了 " +
                    text_zh(calm, "%.2f%%") + "。"));
}

// --- 5. Multiplexing is not faster for one connection ------------------------------------------

void multiplexing_gain(LessonRun& run, Lesson& l) {
    int many = 1000;
    Results r = compare(run, l, "02_thread_per_conn,05_epoll", "1," + std::to_string(many));
    std::vector<std::string> names = {"02_thread_per_conn", "05_epoll"};
    std::string note = note_of(run);
    add_chart(run, l, "req_per_s.svg",
              {"Requests per second, 1 and " + std::to_string(many) + " connections", "connections",
               "requests/s", true, false, note},
              series_of(r, names, "req_per_s"), closed_loop_throughput());
    add_chart(
        run, l, "cpu_per_req.svg",
        {"Server CPU per request", "connections", "us per request (log scale)", true, true, note},
        series_of(r, names, "server_cpu_us_per_req"),
        en_zh("What each reply costs the server.", "服务器为每个回复付出的 CPU。"));
    auto get = [&](const std::string& v, int c, const char* k) { return r.get(v, c, k); };
    double one_thr = get("02_thread_per_conn", 1, "req_per_s");
    double one_ep = get("05_epoll", 1, "req_per_s");
    double cpu_thr = get("02_thread_per_conn", many, "server_cpu_us_per_req");
    double cpu_ep = get("05_epoll", many, "server_cpu_us_per_req");
    double many_thr = get("02_thread_per_conn", many, "req_per_s");
    double many_ep = get("05_epoll", many, "req_per_s");
    for (const std::string& v : names) {
        for (int c : {1, many}) {
            l.numbers.push_back(
                {en_zh(v + ", " + std::to_string(c) + " connection(s)",
                       v + "，" + std::to_string(c) + " 个连接"),
                 en_zh(text(get(v, c, "req_per_s"), "%.0f req/s") + ", p99 " +
                           text(get(v, c, "p99_us"), "%.0f us") + ", " +
                           text(get(v, c, "server_cpu_us_per_req"), "%.2f us CPU/req"),
                       text_zh(get(v, c, "req_per_s"), "%.0f req/s") + "，p99 " +
                           text_zh(get(v, c, "p99_us"), "%.0f us") + "，每个请求 CPU " +
                           text_zh(get(v, c, "server_cpu_us_per_req"), "%.2f us"))});
        }
    }
    if (one_thr <= 0 || one_ep <= 0 || cpu_thr <= 0 || cpu_ep <= 0) {
        judge(l, Verdict::not_measured,
              en_zh("compare did not produce every point (see log.txt).",
                    "compare 没有测出每一个点（见 log.txt）。"));
        return;
    }
    double at_one = one_ep / one_thr;
    double cpu_gain = cpu_thr / cpu_ep;
    bool not_faster = at_one <= 1.10;
    bool gains = cpu_gain >= 1.10 || many_ep >= 1.10 * many_thr;
    std::string many_text = std::to_string(many);
    judge(
        l, not_faster && gains ? Verdict::holds : Verdict::does_not_hold,
        en_zh("With one connection 05_epoll served " + text(at_one, "%.2fx") +
                  " the requests of 02_thread_per_conn (" + (not_faster ? "not faster" : "faster") +
                  "); with " + many_text + " it served " + ratio_text(many_ep, many_thr) +
                  " as many at " + text(cpu_gain, "%.2fx") + " less server CPU per request" +
                  (gains ? "." : ": no gain here."),
              "只有一个连接时，05_epoll 处理的请求数是 02_thread_per_conn 的 " +
                  text_zh(at_one, "%.2fx") + "（" + (not_faster ? "并不更快" : "更快") + "）；" +
                  many_text + " 个连接时是它的 " + ratio_zh(many_ep, many_thr) +
                  "，而 02_thread_per_conn 每个请求花掉的服务器 CPU 是 05_epoll 的 " +
                  text_zh(cpu_gain, "%.2fx") + (gains ? "。" : "：这里看不出多路复用的好处。")));
    l.notes = en_zh(
        "One connection gives a multiplexer nothing to multiplex: it adds an epoll_wait "
        "before every recv. Its gain is in serving many connections with one thread.",
        "只有一个连接时，多路复用器没有什么可复用的：它只是在每次 recv 之前多了一次 epoll_wait。"
        "它的好处在于用一个线程服务很多连接。");
}

// --- 6. select against epoll, with descriptors to watch -----------------------------------------

void select_growth(LessonRun& run, Lesson& l) {
    std::string idle = run.quick ? "0,900" : "0,300,600,900";
    int top = parse_int_list(idle, "--idle", 0).back();
    Results sweep = idle_sweep(run, l, "04_select,05_epoll", idle, 10);
    add_drawn(l, run.dir(l) + "/scale-idle.svg", l.slug + "/scale-idle.svg",
              en_zh("What the requests of 10 active connections cost while idle ones are held "
                    "(iolab scale --idle).",
                    "服务器同时持有空闲连接时，10 个活跃连接的请求各花多少 CPU"
                    "（iolab scale --idle）。"));
    CompareExtra beside;
    beside.sub = "fd_setsize";
    Results cap = compare(run, l, "04_select,05_epoll", "1100", beside);
    add_chart(
        run, l, "fd_setsize.svg",
        {"Connections refused out of 1100", "", "connections refused", false, false, note_of(run)},
        bars({{"04_select", cap.get("04_select", 1100, "refused")},
              {"05_epoll", cap.get("05_epoll", 1100, "refused")}}),
        en_zh("1100 clients at once: select(2) cannot watch a descriptor above 1023.",
              "同时来 1100 个客户端：select(2) 无法监视编号大于 1023 的描述符。"));
    auto growth = [&](const std::string& v) {
        const json* p = idle_point(sweep, v, top);
        return p ? num(*p, "cpu_vs_none") : -1;
    };
    auto at = [&](const std::string& v, int n, const char* key) {
        const json* p = idle_point(sweep, v, n);
        return p ? num(*p, key) : -1;
    };
    double sel = growth("04_select"), ep = growth("05_epoll");
    double refused_sel = cap.get("04_select", 1100, "refused");
    double refused_ep = cap.get("05_epoll", 1100, "refused");
    std::string top_text = std::to_string(top);
    for (const char* v : {"04_select", "05_epoll"}) {
        double none = at(v, 0, "server_cpu_us_per_req");
        double most = at(v, top, "server_cpu_us_per_req");
        l.numbers.push_back(
            {en_zh(std::string(v) + ": server CPU per request, idle 0 and " + top_text,
                   std::string(v) + "：每个请求的服务器 CPU，空闲连接 0 个和 " + top_text + " 个"),
             en_zh(text(none, "%.2f us") + " and " + text(most, "%.2f us") + " (" +
                       text(growth(v), "%.2fx") + ")",
                   text_zh(none, "%.2f us") + " 和 " + text_zh(most, "%.2f us") + "（" +
                       text_zh(growth(v), "%.2fx") + "）")});
    }
    l.numbers.push_back({en_zh("refused out of 1100 connections (04_select, 05_epoll)",
                               "1100 个连接中被拒绝的个数（04_select、05_epoll）"),
                         en_zh(text(refused_sel, "%.0f") + ", " + text(refused_ep, "%.0f"),
                               text_zh(refused_sel, "%.0f") + "，" + text_zh(refused_ep, "%.0f"))});
    if (sel < 0 || ep < 0 || refused_sel < 0 || refused_ep < 0) {
        judge(l, Verdict::not_measured, no_figures_from("The sweep", "这次扫描"));
        return;
    }
    bool grows = sel >= 1.3 && sel >= 1.2 * ep;
    bool capped = refused_sel > 0 && refused_ep == 0;
    judge(l, grows && capped ? Verdict::holds : Verdict::does_not_hold,
          en_zh("With " + top_text + " idle descriptors, select's CPU per request grew " +
                    text(sel, "%.2fx") + " and epoll's " + text(ep, "%.2fx") +
                    "; of 1100 clients 04_select refused " + text(refused_sel, "%.0f") +
                    " (FD_SETSIZE is 1024) and 05_epoll " + text(refused_ep, "%.0f") + ".",
                "有 " + top_text + " 个空闲描述符时，select 每个请求的 CPU 变成原来的 " +
                    text_zh(sel, "%.2fx") + "，epoll 是 " + text_zh(ep, "%.2fx") +
                    "；1100 个客户端中，04_select 拒绝了 " + text_zh(refused_sel, "%.0f") +
                    " 个（FD_SETSIZE 是 1024），05_epoll 拒绝了 " + text_zh(refused_ep, "%.0f") +
                    " 个。"));
}

// --- 7. A slow handler stalls an event loop -----------------------------------------------------

struct Stall {
    bool ran = false;
    std::string why;
    double p99_ms = -1, max_ms = -1;
    uint64_t answered = 0, work_done = 0;
};

Stall stall_point(const LessonRun& run, const std::string& name, int work_ms, double seconds) {
    Stall out;
    std::vector<Variant> found = select_variants(registry(self_dir()), name);
    ServerProcess server = start_pinned(found.front(), {}, run.pin);
    if (!server.running()) {
        out.why = server.reason();
        return out;
    }
    LoadSpec spec;
    spec.payload = 16;
    LoadGen gen(spec);
    // Four clients at 50 requests/s each on the open-loop schedule, and one more that sends WORK
    // in a closed loop: every request due while the thread that serves it works waits for it.
    size_t t = gen.add_target(server.host(), server.port(), 4, 200, 1, work_ms);
    gen.connect(std::chrono::seconds(5));
    gen.start();
    gen.run_until(now_ns() + static_cast<int64_t>(seconds * 1e9), [] { return !stop_requested(); });
    gen.finish(std::chrono::milliseconds(work_ms + 500));
    const TargetStats& s = gen.stats(t);
    out.answered = s.completed;
    out.work_done = s.work_completed;
    if (s.latency.count() > 0) {
        out.p99_ms = static_cast<double>(s.latency.percentile(0.99)) / 1e6;
        out.max_ms = static_cast<double>(s.latency.max()) / 1e6;
    }
    gen.close_all();
    server.stop();
    out.ran = s.latency.count() > 0;
    if (!out.ran) {
        out.why = s.first_error.empty() ? "no reply" : s.first_error;
    }
    return out;
}

void slow_handler(LessonRun& run, Lesson& l) {
    int work_ms = 200;
    double seconds = run.quick ? 1.2 : 3.0;
    l.commands.push_back("iolab demo --models 05_epoll,08_reactor_workers --stall --stall-ms " +
                         std::to_string(work_ms) + " --seconds 5");
    l.commands.push_back("iolab lessons --only 7");
    Stall loop = stall_point(run, "05_epoll", work_ms, seconds);
    Stall workers = stall_point(run, "08_reactor_workers", work_ms, seconds);
    add_chart(run, l, "stall.svg",
              {"p99 latency of the other clients while one sends WORK " + std::to_string(work_ms),
               "", "p99 latency (ms)", false, false, note_of(run)},
              bars({{"05_epoll (one loop)", loop.p99_ms},
                    {"08_reactor_workers (handlers on workers)", workers.p99_ms}}),
              en_zh("Four clients at 200 requests/s in all, latency from when each request was "
                    "due, while a fifth keeps the server busy with WORK.",
                    "四个客户端合计每秒 200 个请求，延迟从每个请求应当发出的时刻算起；同时"
                    "第五个客户端不停地发 WORK，让服务器一直忙着。"));
    for (const auto& [v, s] : {std::pair<std::string, const Stall&>{"05_epoll", loop},
                               {"08_reactor_workers", workers}}) {
        l.numbers.push_back(
            {en_zh(v + ": the others' p99, max", v + "：其他客户端的 p99 和最大延迟"),
             en_zh(text(s.p99_ms, "%.1f ms") + ", " + text(s.max_ms, "%.1f ms") + " (" +
                       std::to_string(s.answered) + " replies, " + std::to_string(s.work_done) +
                       " WORK done)",
                   text_zh(s.p99_ms, "%.1f ms") + "，" + text_zh(s.max_ms, "%.1f ms") + "（" +
                       std::to_string(s.answered) + " 个回复，完成 " + std::to_string(s.work_done) +
                       " 个 WORK）")});
    }
    if (!loop.ran || !workers.ran) {
        std::string why = loop.ran ? workers.why : loop.why;
        judge(l, Verdict::not_measured,
              en_zh("A server did not answer: " + why, "有一个服务器没有应答：" + why));
        return;
    }
    bool holds = loop.p99_ms >= 0.5 * work_ms && workers.p99_ms <= 0.2 * work_ms;
    std::string work = std::to_string(work_ms);
    judge(l, holds ? Verdict::holds : Verdict::does_not_hold,
          en_zh("While one client's WORK " + work +
                    " ran, the other clients of 05_epoll waited up to " +
                    text(loop.p99_ms, "%.0f ms") + " (p99), those of 08_reactor_workers " +
                    text(workers.p99_ms, "%.1f ms") + ": " +
                    ratio_text(loop.p99_ms, workers.p99_ms) + ".",
                "一个客户端的 WORK " + work + " 运行期间，05_epoll 的其他客户端要等到 " +
                    text_zh(loop.p99_ms, "%.0f ms") + "（p99），08_reactor_workers 的只等 " +
                    text_zh(workers.p99_ms, "%.1f ms") + "：前者是后者的 " +
                    ratio_zh(loop.p99_ms, workers.p99_ms) + "。"));
}

// --- 8. SIGIO says that, not what ----------------------------------------------------------------

void sigio_scan(LessonRun& run, Lesson& l) {
    std::string idle = run.quick ? "0,800" : "0,400,800";
    int top = parse_int_list(idle, "--idle", 0).back();
    Results sweep = idle_sweep(run, l, "06_sigio,06_sigio_rt", idle, 10);
    add_drawn(l, run.dir(l) + "/scale-idle.svg", l.slug + "/scale-idle.svg",
              en_zh("10 active connections while idle ones are held: 06_sigio scans every "
                    "connection on each signal, 06_sigio_rt is told the descriptor.",
                    "服务器同时持有空闲连接时的 10 个活跃连接：06_sigio 每收到一个信号就扫描"
                    "所有连接，06_sigio_rt 则直接得知是哪个描述符。"));
    auto at = [&](const std::string& v, int n, const char* key) {
        const json* p = idle_point(sweep, v, n);
        return p ? num(*p, key) : -1;
    };
    std::string top_text = std::to_string(top);
    for (const char* v : {"06_sigio", "06_sigio_rt"}) {
        std::string name = v;
        double calls_none = at(v, 0, "syscalls_per_req"),
               calls_most = at(v, top, "syscalls_per_req");
        double cpu_none = at(v, 0, "server_cpu_us_per_req");
        double cpu_most = at(v, top, "server_cpu_us_per_req");
        l.numbers.push_back(
            {en_zh(name + ": syscalls per request, idle 0 and " + top_text,
                   name + "：每个请求的系统调用，空闲连接 0 个和 " + top_text + " 个"),
             en_zh(text(calls_none, "%.1f") + " and " + text(calls_most, "%.1f"),
                   text_zh(calls_none, "%.1f") + " 和 " + text_zh(calls_most, "%.1f"))});
        l.numbers.push_back(
            {en_zh(name + ": server CPU per request, idle 0 and " + top_text,
                   name + "：每个请求的服务器 CPU，空闲连接 0 个和 " + top_text + " 个"),
             en_zh(text(cpu_none, "%.2f us") + " and " + text(cpu_most, "%.2f us"),
                   text_zh(cpu_none, "%.2f us") + " 和 " + text_zh(cpu_most, "%.2f us"))});
    }
    double plain = at("06_sigio", top, "cpu_vs_none");
    double rt = at("06_sigio_rt", top, "cpu_vs_none");
    double calls_plain = at("06_sigio", top, "syscalls_per_req");
    double calls_rt = at("06_sigio_rt", top, "syscalls_per_req");
    if (plain < 0 || rt < 0) {
        judge(l, Verdict::not_measured, no_figures_from("The sweep", "这次扫描"));
        return;
    }
    bool holds = plain >= 1.3 && plain >= 1.2 * rt;
    judge(
        l, holds ? Verdict::holds : Verdict::does_not_hold,
        en_zh("With " + top_text + " idle connections, 06_sigio's CPU per request grew " +
                  text(plain, "%.2fx") + " (" + text(calls_plain, "%.1f") +
                  " syscalls per request: it asks every socket), 06_sigio_rt's " +
                  text(rt, "%.2fx") + " (" + text(calls_rt, "%.1f") +
                  ": the queued signal names the descriptor).",
              "有 " + top_text + " 个空闲连接时，06_sigio 每个请求的 CPU 变成原来的 " +
                  text_zh(plain, "%.2fx") + "（每个请求 " + text_zh(calls_plain, "%.1f") +
                  " 次系统调用：它要挨个询问每个套接字），06_sigio_rt 是 " + text_zh(rt, "%.2fx") +
                  "（" + text_zh(calls_rt, "%.1f") + " 次：排队的实时信号直接指明了描述符）。"));
}

// --- 9. glibc's POSIX AIO is threads -------------------------------------------------------------

void posix_aio(LessonRun& run, Lesson& l) {
    int conns = 32;
    Results aio = bench(run, l, "07_aio", conns);
    Results epoll = bench(run, l, "05_epoll", conns);
    auto idle_threads = [](const Results& r) {
        return r.doc.contains("idle") ? num(r.doc["idle"], "threads") : -1;
    };
    auto load_threads = [](const Results& r) { return num(r.doc, "max_threads_under_load"); };
    auto closed = [](const Results& r, const char* key) {
        return r.doc.contains("results") && !r.doc["results"].empty()
                   ? num(r.doc["results"][0], key)
                   : -1;
    };
    auto ctx_per_req = [&](const Results& r) {
        double req = closed(r, "requests");
        double ctx = closed(r, "ctx_switches_voluntary");
        return req > 0 && ctx >= 0 ? ctx / req : -1;
    };
    add_chart(run, l, "threads.svg",
              {"Threads idle and under " + std::to_string(conns) + " connections", "", "threads",
               false, false, note_of(run)},
              bars({{"07_aio idle", idle_threads(aio)},
                    {"07_aio under load", load_threads(aio)},
                    {"05_epoll idle", idle_threads(epoll)},
                    {"05_epoll under load", load_threads(epoll)}}),
              en_zh("The threads the kernel sees: glibc's AIO helpers appear under load.",
                    "内核看到的线程：有负载时，glibc 的 AIO 辅助线程就出现了。"));
    add_chart(
        run, l, "ctx_per_req.svg",
        {"Voluntary context switches per request", "", "per request", false, false, note_of(run)},
        bars({{"07_aio", ctx_per_req(aio)}, {"05_epoll", ctx_per_req(epoll)}}),
        en_zh("A helper thread that blocks in recv and wakes the main thread switches context "
              "on every request.",
              "辅助线程阻塞在 recv 里，完成后再唤醒主线程，每个请求都要切换一次上下文。"));
    for (const auto& [v, r] :
         {std::pair<std::string, const Results&>{"07_aio", aio}, {"05_epoll", epoll}}) {
        l.numbers.push_back(
            {en_zh(v + ": threads idle, under load", v + "：空闲时和有负载时的线程数"),
             en_zh(text(idle_threads(r), "%.0f") + ", " + text(load_threads(r), "%.0f"),
                   text_zh(idle_threads(r), "%.0f") + "，" + text_zh(load_threads(r), "%.0f"))});
        l.numbers.push_back({en_zh(v + ": syscalls, voluntary context switches per request",
                                   v + "：每个请求的系统调用和主动上下文切换"),
                             en_zh(text(closed(r, "syscalls_per_req"), "%.1f") + ", " +
                                       text(ctx_per_req(r), "%.2f"),
                                   text_zh(closed(r, "syscalls_per_req"), "%.1f") + "，" +
                                       text_zh(ctx_per_req(r), "%.2f"))});
    }
    double grown = load_threads(aio) - idle_threads(aio);
    if (idle_threads(aio) < 0 || load_threads(aio) < 0 || ctx_per_req(epoll) < 0 ||
        ctx_per_req(aio) < 0) {
        judge(l, Verdict::not_measured, no_figures_from("bench", "bench "));
        return;
    }
    FutexCount futex_aio = futexes(run, "07_aio", 200);
    FutexCount futex_epoll = futexes(run, "05_epoll", 200);
    l.commands.push_back(
        futex_aio.command +
        "   # PING it from another terminal, then Ctrl-C: futex.txt has the count");
    auto futex_text = [](const FutexCount& f) {
        return f.ran ? same(text(f.per_request, "%.1f"))
                     : en_zh("not measured: " + f.why, "未测得：" + f.why);
    };
    Words futex_aio_text = futex_text(futex_aio), futex_epoll_text = futex_text(futex_epoll);
    l.numbers.push_back({en_zh("futex calls per request, counted by strace -f (07_aio, 05_epoll)",
                               "每个请求的 futex 调用，由 strace -f 统计（07_aio、05_epoll）"),
                         en_zh(futex_aio_text.at("en") + ", " + futex_epoll_text.at("en"),
                               in_chinese(futex_aio_text) + "，" + in_chinese(futex_epoll_text))});
    // The futex count is the direct evidence where strace runs; the context switches, which the
    // kernel counts anyway, stand in for it where strace is not installed.
    bool handoff =
        futex_aio.ran && futex_epoll.ran
            ? futex_aio.per_request >= 1 && futex_aio.per_request > futex_epoll.per_request
            : ctx_per_req(aio) >= 1.5 * std::max(ctx_per_req(epoll), 0.01);
    bool holds = grown >= 2 && handoff;
    std::string conns_text = std::to_string(conns);
    judge(l, holds ? Verdict::holds : Verdict::does_not_hold,
          en_zh("Under " + conns_text + " connections 07_aio grew from " +
                    text(idle_threads(aio), "%.0f") + " to " + text(load_threads(aio), "%.0f") +
                    " threads (05_epoll: " + text(load_threads(epoll), "%.0f") + "), made " +
                    (futex_aio.ran ? text(futex_aio.per_request, "%.1f")
                                   : std::string("(unmeasured)")) +
                    " futex calls per request (05_epoll: " +
                    (futex_epoll.ran ? text(futex_epoll.per_request, "%.1f") : std::string("-")) +
                    ") and " + text(closed(aio, "syscalls_per_req"), "%.1f") +
                    " system calls in all per request (05_epoll: " +
                    text(closed(epoll, "syscalls_per_req"), "%.1f") +
                    "): the helpers block in recv and hand each result over through futexes.",
                conns_text + " 个连接下，07_aio 的线程从 " + text_zh(idle_threads(aio), "%.0f") +
                    " 个增加到 " + text_zh(load_threads(aio), "%.0f") + " 个（05_epoll：" +
                    text_zh(load_threads(epoll), "%.0f") + " 个），每个请求有 " +
                    (futex_aio.ran ? text(futex_aio.per_request, "%.1f")
                                   : std::string("（未测得）")) +
                    " 次 futex 调用（05_epoll：" +
                    (futex_epoll.ran ? text(futex_epoll.per_request, "%.1f") : std::string("-")) +
                    "），每个请求总共 " + text_zh(closed(aio, "syscalls_per_req"), "%.1f") +
                    " 次系统调用（05_epoll：" + text_zh(closed(epoll, "syscalls_per_req"), "%.1f") +
                    "）：辅助线程阻塞在 recv 里，再通过 futex 把每个结果交回主线程。"));
    l.notes = en_zh(
        "Every helper is a thread of the process: ps -L -p PID lists them while the load runs.",
        "每个辅助线程都是这个进程自己的线程：负载运行期间，ps -L -p PID 能把它们列出来。");
}

// --- 10. Linux kernel AIO on sockets -----------------------------------------------------------

void kernel_aio(LessonRun& run, Lesson& l) {
    Results r = compare(run, l, "07_aio_kernel,05_epoll", "1,100");
    CallCounts calls = traced_calls(run, "07_aio_kernel", 50);
    CallCounts epoll_calls = traced_calls(run, "05_epoll", 50);
    l.commands.push_back("07_aio_kernel_server --trace   # in one terminal; its calls, on stderr");
    l.commands.push_back("printf 'PING\\n%.0s' {1..50} | 07_aio_client --port 9007   # in another");
    std::vector<std::string> names = {"07_aio_kernel", "05_epoll"};
    add_chart(run, l, "syscalls.svg",
              {"System calls per request", "connections", "syscalls per request", true, false,
               note_of(run)},
              series_of(r, names, "syscalls_per_req"), counted_by_tracepoint());
    add_chart(run, l, "req_per_s.svg",
              {"Requests per second", "connections", "requests/s", true, false, note_of(run)},
              series_of(r, names, "req_per_s"), closed_loop_throughput());
    l.numbers.push_back({en_zh("07_aio_kernel's traced calls per PING, one connection",
                               "07_aio_kernel 每个 PING 记录到的调用（一个连接）"),
                         calls_text(calls)});
    l.numbers.push_back({en_zh("05_epoll's traced calls per PING, one connection",
                               "05_epoll 每个 PING 记录到的调用（一个连接）"),
                         calls_text(epoll_calls)});
    for (const std::string& v : names) {
        l.numbers.push_back(
            {en_zh(v + " at 100 connections", v + "，100 个连接"),
             en_zh(text(r.get(v, 100, "req_per_s"), "%.0f req/s") + ", " +
                       text(r.get(v, 100, "syscalls_per_req"), "%.2f syscalls/req"),
                   text_zh(r.get(v, 100, "req_per_s"), "%.0f req/s") + "，每个请求 " +
                       text_zh(r.get(v, 100, "syscalls_per_req"), "%.2f") + " 次系统调用")});
    }
    std::string gone = r.skipped("07_aio_kernel");
    if (!gone.empty() && gone.rfind("unavailable", 0) == 0) {
        judge(l, Verdict::cannot_show,
              en_zh("07_aio_kernel cannot run here: " + gone,
                    "07_aio_kernel 在这里无法运行：" + gone));
        return;
    }
    double copies = calls_of(calls, {"recv", "send"});
    double aio = calls_of(calls, {"io_submit", "io_getevents"});
    double ka = r.get("07_aio_kernel", 100, "req_per_s");
    double ep = r.get("05_epoll", 100, "req_per_s");
    if (!calls.ran || ka <= 0 || ep <= 0) {
        judge(l, Verdict::not_measured, no_figures());
        return;
    }
    bool holds = copies >= 1.5 && aio >= 1;
    judge(l, holds ? Verdict::holds : Verdict::does_not_hold,
          en_zh("Per request 07_aio_kernel made " + text(aio, "%.2f") +
                    " AIO calls (io_submit, io_getevents: a poll iocb saying the socket is ready) "
                    "and still " +
                    text(copies, "%.2f") +
                    " recv/send calls to copy the bytes itself, and accepted with a plain "
                    "accept4; at 100 connections it served " +
                    ratio_text(ka, ep) + " the requests of 05_epoll.",
                "07_aio_kernel 每个请求做了 " + text_zh(aio, "%.2f") +
                    " 次 AIO 调用（io_submit、io_getevents：一个 poll iocb，告诉它套接字就绪了），"
                    "却仍然要自己做 " +
                    text_zh(copies, "%.2f") +
                    " 次 recv/send 来拷贝字节，接受连接用的也是普通的 accept4；100 个连接时，"
                    "它处理的请求数是 05_epoll 的 " +
                    ratio_zh(ka, ep) + "。"));
    l.notes = en_zh(
        "Linux AIO has no accept operation and, on a socket, only a one-shot poll: it is "
        "readiness notification, like epoll, re-armed for every wait.",
        "Linux AIO 没有 accept 操作，在套接字上也只有一次性的 poll：它其实是就绪通知，和 epoll "
        "一样，只不过每等一次都要重新提交。");
}

// --- 12. Several reactors on several cores ------------------------------------------------------

void multi_reactor(LessonRun& run, Lesson& l) {
    Results r = compare(run, l, "08_reactor,08_reactor_multi", "100");
    auto cpu_pct = [&](const std::string& v) {
        double per = r.get(v, 100, "server_cpu_us_per_req");
        double rate = r.get(v, 100, "req_per_s");
        return per > 0 && rate > 0 ? per * rate / 1e4 : -1;
    };
    double one = cpu_pct("08_reactor"), multi = cpu_pct("08_reactor_multi");
    double rate_one = r.get("08_reactor", 100, "req_per_s");
    double rate_multi = r.get("08_reactor_multi", 100, "req_per_s");
    add_chart(run, l, "cpu.svg",
              {"Server CPU at 100 connections", "", "% of one core", false, false, note_of(run)},
              bars({{"08_reactor", one}, {"08_reactor_multi", multi}}),
              en_zh("CPU time of the server over the window: above 100% means more than one "
                    "core.",
                    "测量窗口内服务器用掉的 CPU 时间：超过 100% 就是用了不止一个核。"));
    add_chart(
        run, l, "req_per_s.svg",
        {"Requests per second at 100 connections", "", "requests/s", false, false, note_of(run)},
        bars({{"08_reactor", rate_one}, {"08_reactor_multi", rate_multi}}),
        closed_loop_throughput());
    for (const char* v : {"08_reactor", "08_reactor_multi"}) {
        std::string name = v;
        l.numbers.push_back({en_zh(name + " at 100 connections", name + "，100 个连接"),
                             en_zh(text(r.get(v, 100, "req_per_s"), "%.0f req/s") + ", CPU " +
                                       text(cpu_pct(v), "%.0f%%") + ", " +
                                       text(r.get(v, 100, "threads"), "%.0f threads"),
                                   text_zh(r.get(v, 100, "req_per_s"), "%.0f req/s") + "，CPU " +
                                       text_zh(cpu_pct(v), "%.0f%%") + "，" +
                                       text_zh(r.get(v, 100, "threads"), "%.0f") + " 个线程")});
    }
    l.numbers.push_back({en_zh("CPUs the server may use here", "服务器在这里能用的 CPU 数"),
                         same(std::to_string(run.server_cpus))});
    const json* multi_row = r.row("08_reactor_multi", 100);
    bool client_bound = multi_row != nullptr && multi_row->value("client_bound", false);
    if (client_bound) {
        l.notes = en_zh(
            "The load generator used most of its CPU (client-bound): it, not the server, "
            "set the pace, so neither reactor needed more than part of a core.",
            "负载生成器几乎用满了它的 CPU（受限于客户端）：决定节奏的是它而不是服务器，所以"
            "两个 Reactor 都只用到一个核的一部分。");
    }
    if (one < 0 || multi < 0) {
        judge(l, Verdict::not_measured, no_figures_from("compare", "compare "));
        return;
    }
    if (run.server_cpus < 2) {
        std::string cpus = std::to_string(run.server_cpus);
        double threads = r.get("08_reactor_multi", 100, "threads");
        judge(l, Verdict::cannot_show,
              en_zh("The server has " + cpus +
                        " CPU here (the other runs the load generator): 08_reactor_multi used " +
                        text(multi, "%.0f%%") + " of a core and served " +
                        ratio_text(rate_multi, rate_one) +
                        " the requests of 08_reactor. Its loops are there (" +
                        text(threads, "%.0f") + " threads) but take turns on one core.",
                    "服务器在这里只有 " + cpus +
                        " 个 CPU（另一个用来运行负载生成器）：08_reactor_multi 用了一个核的 " +
                        text_zh(multi, "%.0f%%") + "，处理的请求数是 08_reactor 的 " +
                        ratio_zh(rate_multi, rate_one) + "。它的几个事件循环都在（" +
                        text_zh(threads, "%.0f") + " 个线程），但只能在一个核上轮流运行。"));
        l.notes = en_zh(
            "What a 2-core machine shows: the sub-reactors exist and share the "
            "connections, and cost little over one loop. What it cannot show: them "
            "running at once. On 4 or more cores, run the same command.",
            "2 核机器能展示的：子 Reactor 确实存在，分担了连接，比一个事件循环多花不了多少。"
            "它展示不了的：这些循环同时运行。在 4 核或更多核的机器上运行同样的命令即可看到。");
        return;
    }
    bool holds = multi >= 120 && rate_multi >= 1.2 * rate_one;
    judge(l, holds ? Verdict::holds : Verdict::does_not_hold,
          en_zh("08_reactor_multi used " + text(multi, "%.0f%%") + " of a core against " +
                    text(one, "%.0f%%") + " and served " + ratio_text(rate_multi, rate_one) +
                    " the requests of one reactor.",
                "08_reactor_multi 用了一个核的 " + text_zh(multi, "%.0f%%") +
                    "，单个 Reactor 用了 " + text_zh(one, "%.0f%%") +
                    "；它处理的请求数是单个 Reactor 的 " + ratio_zh(rate_multi, rate_one) + "。"));
}

// --- 13. A proactor emulated on a reactor -------------------------------------------------------

void emulated_proactor(LessonRun& run, Lesson& l) {
    std::vector<std::string> names = {"09_proactor", "09_proactor_epoll", "09_proactor_asio"};
    Results r = compare(run, l, "09_proactor,09_proactor_epoll,09_proactor_asio", "1,100");
    add_chart(run, l, "req_per_s.svg",
              {"Requests per second", "connections", "requests/s", true, false, note_of(run)},
              series_of(r, names, "req_per_s"), closed_loop_throughput());
    add_chart(run, l, "syscalls.svg",
              {"System calls per request", "connections", "syscalls per request", true, false,
               note_of(run)},
              series_of(r, names, "syscalls_per_req"),
              en_zh("io_uring posts completions; the emulations wait for readiness and copy in "
                    "user space.",
                    "io_uring 投递完成事件；两个模拟实现则是等待就绪，再在用户态拷贝数据。"));
    bool all_right = true;
    for (const std::string& v : names) {
        const json* row = r.row(v, 100);
        std::string gone = r.skipped(v);
        if (row == nullptr) {
            l.numbers.push_back(
                {same(v), gone.empty() ? en_zh("not measured", "未测得") : same(gone)});
            all_right = all_right && v == "09_proactor";
            continue;
        }
        double bad = num(*row, "wrong") + num(*row, "lost");
        all_right = all_right && (v == "09_proactor" || (bad == 0 && num(*row, "answered") > 0));
        l.numbers.push_back(
            {en_zh(v + " at 100 connections", v + "，100 个连接"),
             en_zh(text(num(*row, "req_per_s"), "%.0f req/s") + ", " +
                       text(num(*row, "syscalls_per_req"), "%.2f syscalls/req") + ", p99 " +
                       text(num(*row, "p99_us"), "%.0f us") + ", wrong+lost " + text(bad, "%.0f"),
                   text_zh(num(*row, "req_per_s"), "%.0f req/s") + "，每个请求 " +
                       text_zh(num(*row, "syscalls_per_req"), "%.2f") + " 次系统调用，p99 " +
                       text_zh(num(*row, "p99_us"), "%.0f us") + "，错误和丢失的回复 " +
                       text_zh(bad, "%.0f") + " 个")});
    }
    double uring = r.get("09_proactor", 100, "req_per_s");
    double emu = r.get("09_proactor_epoll", 100, "req_per_s");
    double asio = r.get("09_proactor_asio", 100, "req_per_s");
    if (emu < 0 || asio < 0) {
        judge(l, Verdict::not_measured, no_figures_from("compare", "compare "));
        return;
    }
    judge(
        l, all_right ? Verdict::holds : Verdict::does_not_hold,
        en_zh(std::string("Both emulations ") +
                  (all_right ? "answered every request byte for byte" : "lost or garbled replies") +
                  ", with the same completion handlers on top of epoll: 09_proactor_epoll "
                  "served " +
                  text(emu, "%.0f") + " req/s and 09_proactor_asio " + text(asio, "%.0f") +
                  " at 100 connections, against " + text(uring, "%.0f") +
                  " for io_uring's 09_proactor (" + ratio_text(emu, uring) + " and " +
                  ratio_text(asio, uring) + ").",
              std::string("两个模拟实现在 epoll 之上跑的是同样的完成处理器，") +
                  (all_right ? "每个请求都逐字节正确地得到了回答" : "却丢失或弄错了回复") +
                  "：100 个连接时，09_proactor_epoll 达到 " + text_zh(emu, "%.0f") +
                  " req/s，09_proactor_asio 达到 " + text_zh(asio, "%.0f") +
                  " req/s，用 io_uring 的 09_proactor 是 " + text_zh(uring, "%.0f") +
                  " req/s（两者分别是它的 " + ratio_zh(emu, uring) + " 和 " +
                  ratio_zh(asio, uring) + "）。"));
    if (uring < 0) {
        std::string why = r.skipped("09_proactor");
        l.notes =
            en_zh("09_proactor did not run here: " + why, "09_proactor 在这里没有运行：" + why);
    }
}

// --- 14. What a connection pool saves -----------------------------------------------------------

void connection_pool(LessonRun& run, Lesson& l) {
    CompareExtra both;
    both.per_request = true;
    Results r = compare(run, l, "05_epoll", "10", both);
    const std::string v = "05_epoll";
    double keep = r.get(v, 10, "req_per_s"), fresh = r.get(v, 10, "req_per_s", "per-request");
    double keep_p50 = r.get(v, 10, "p50_us"), fresh_p50 = r.get(v, 10, "p50_us", "per-request");
    double keep_calls = r.get(v, 10, "syscalls_per_req");
    double fresh_calls = r.get(v, 10, "syscalls_per_req", "per-request");
    add_chart(
        run, l, "req_per_s.svg",
        {"05_epoll, 10 clients: requests per second", "", "requests/s", false, false, note_of(run)},
        bars({{"persistent connections", keep}, {"a new connection per request", fresh}}),
        en_zh("The same server and clients; only the connection's life differs.",
              "同样的服务器、同样的客户端，只有连接的生命周期不同。"));
    add_chart(
        run, l, "p50.svg",
        {"05_epoll, 10 clients: median latency", "", "p50 latency (us)", false, false,
         note_of(run)},
        bars({{"persistent connections", keep_p50}, {"a new connection per request", fresh_p50}}),
        en_zh("Latency from the connect, handshake and accept included.",
              "延迟从 connect 算起，包括握手和 accept。"));
    auto three = [](double rate, double p50, double calls) {
        return en_zh(
            text(rate, "%.0f") + ", " + text(p50, "%.0f us") + ", " + text(calls, "%.1f"),
            text_zh(rate, "%.0f") + "，" + text_zh(p50, "%.0f us") + "，" + text_zh(calls, "%.1f"));
    };
    l.numbers.push_back({en_zh("persistent: req/s, p50, server syscalls/req",
                               "保持连接：req/s、p50、服务器每个请求的系统调用"),
                         three(keep, keep_p50, keep_calls)});
    l.numbers.push_back({en_zh("new connection per request: req/s, p50, server syscalls/req",
                               "每个请求新建连接：req/s、p50、服务器每个请求的系统调用"),
                         three(fresh, fresh_p50, fresh_calls)});
    l.numbers.push_back({en_zh("TIME_WAIT sockets left", "留下的 TIME_WAIT 套接字"),
                         measured(r.get(v, 10, "time_wait", "per-request"), "%.0f")});
    if (keep <= 0 || fresh <= 0) {
        judge(l, Verdict::not_measured, no_figures_from("compare", "compare "));
        return;
    }
    judge(l, keep >= 1.2 * fresh ? Verdict::holds : Verdict::does_not_hold,
          en_zh("Keeping the connections served " + ratio_text(keep, fresh) +
                    " the requests of connecting for each, at " + ratio_text(fresh_p50, keep_p50) +
                    " lower median latency and " + ratio_text(fresh_calls, keep_calls) +
                    " fewer server syscalls per request.",
                "保持连接处理的请求数是每次都新建连接的 " + ratio_zh(keep, fresh) +
                    "；反过来看，每次新建连接的中位延迟是保持连接的 " +
                    ratio_zh(fresh_p50, keep_p50) + "，服务器每个请求的系统调用是它的 " +
                    ratio_zh(fresh_calls, keep_calls) + "。"));
}

}  // namespace

const std::vector<Claim>& claims() {
    static const std::vector<Claim> all = {
        {1, "01-two-phases",
         en_zh("A read has two phases, and blocking IO sleeps through both",
               "读分两个阶段，阻塞 IO 在两个阶段里都睡着"),
         en_zh("Reading from a socket means waiting until data has arrived, then copying it from "
               "the kernel into the program. A blocking recv does both inside one call, and the "
               "thread can do nothing else until it returns.",
               "从套接字读数据，先要等待数据到达（第一阶段），再把数据从内核拷贝到程序里"
               "（第二阶段）。阻塞的 recv 在一次调用里做完这两件事，调用返回之前，线程别的什么"
               "都做不了。"),
         two_phases},
        {2, "02-thread-per-connection",
         en_zh("A thread per connection does not scale", "每连接一线程撑不住大量连接"),
         en_zh("Giving every client its own thread (or process) is simple, but each one is a "
               "kernel task with a stack: thousands of clients mean thousands of tasks, their "
               "memory and their context switches.",
               "给每个客户端单独开一个线程（或进程）写起来简单，但每个线程都是一个带着栈的内核"
               "任务：几千个客户端就是几千个任务，还有它们占的内存和它们之间的上下文切换。"),
         thread_per_connection},
        {3, "03-thread-pool",
         en_zh("A pool caps the threads, and clients wait", "线程池限住了线程数，客户端就得等"),
         en_zh("A fixed pool of workers keeps the thread count flat however many clients come, "
               "but once every worker is busy the next clients wait in a queue or are turned "
               "away.",
               "固定大小的线程池不管来多少客户端，线程数都保持不变；但所有工作线程都忙着时，"
               "后来的客户端只能在队列里等，或者被拒之门外。"),
         thread_pool},
        {4, "04-busy-polling",
         en_zh("Busy polling burns a core doing nothing", "忙轮询什么都不做也占满一个核"),
         en_zh("A loop that keeps asking non-blocking sockets for data never sleeps: it uses a "
               "whole core even when no client is connected, where a server that waits in the "
               "kernel uses none.",
               "一个不停向非阻塞套接字要数据的循环永远不会睡眠：即使一个客户端都没有，它也要"
               "占满一个核；而在内核里等待的服务器几乎不占 CPU。"),
         busy_polling},
        {5, "05-multiplexing-gain",
         en_zh("Multiplexing pays off with many connections, not one",
               "IO 多路复用的好处在连接多的时候，而不是只有一个连接的时候"),
         en_zh("epoll does not make one connection faster (it adds a wait call before each "
               "read); what it buys is serving many connections with one thread.",
               "epoll 并不会让单个连接变快（每次读之前反而多了一次等待调用）；它换来的是用一个"
               "线程服务很多连接。"),
         multiplexing_gain},
        {6, "06-select-growth",
         en_zh("select pays for every descriptor; epoll does not",
               "select 要为每个描述符付出代价，epoll 不用"),
         en_zh("select(2) hands the kernel the whole set on every call, so its cost grows with "
               "the descriptors it watches, and it cannot watch a descriptor numbered FD_SETSIZE "
               "(1024) or more; epoll reports only what is ready.",
               "select(2) 每次调用都要把整个描述符集合交给内核，所以它的开销随监视的描述符数"
               "增长，而且编号达到 FD_SETSIZE（1024）及以上的描述符它根本监视不了；epoll 只报告"
               "已经就绪的描述符。"),
         select_growth},
        {7, "07-slow-handler",
         en_zh("One slow handler stalls an event loop", "一个慢处理器就能卡住整个事件循环"),
         en_zh("In a single-threaded event loop a handler that takes long holds up every other "
               "client until it returns; handing handlers to worker threads keeps the loop "
               "answering.",
               "在单线程的事件循环里，一个耗时长的事件处理器在返回之前会让其他所有客户端都等着；"
               "把处理器交给工作线程去跑，事件循环就能一直应答。"),
         slow_handler},
        {8, "08-sigio-scan",
         en_zh("SIGIO says something is ready, not what", "SIGIO 只说有东西就绪了，不说是哪个"),
         en_zh("A plain SIGIO only says that some socket is ready, so the handler must try them "
               "all; a real-time signal set with F_SETSIG carries the descriptor, and the scan "
               "goes away.",
               "普通的 SIGIO 只告诉你某个套接字就绪了，处理器只好把所有套接字都试一遍；用 "
               "F_SETSIG 换成实时信号后，信号本身就带着描述符，这一遍扫描也就省掉了。"),
         sigio_scan},
        {9, "09-posix-aio",
         en_zh("glibc's POSIX AIO is threads in user space",
               "glibc 的 POSIX AIO 其实是用户态的线程"),
         en_zh("aio_read on a socket is not done by the kernel: glibc hands it to helper threads "
               "that block in ordinary calls and wake the caller, with a thread switch on every "
               "request.",
               "套接字上的 aio_read 并不是由内核完成的：glibc 把它交给辅助线程，辅助线程在普通的"
               "调用里阻塞，完成后再唤醒调用者，每个请求都要切换一次线程。"),
         posix_aio},
        {10, "10-kernel-aio",
         en_zh("Linux AIO on sockets is a poll in disguise",
               "套接字上的 Linux AIO 只是换了个样子的 poll"),
         en_zh("The kernel's own AIO (io_submit) has no accept and, for a socket, only a one-shot "
               "poll: it says when to read, and the copy is still a recv, as with epoll.",
               "内核自己的 AIO（io_submit）没有 accept，对套接字也只有一次性的 poll：它告诉你什么"
               "时候可以读，拷贝数据还得靠 recv，和 epoll 一样。"),
         kernel_aio},
        {11, "11-io-uring",
         en_zh("io_uring does both phases in the kernel", "io_uring 在内核里完成两个阶段"),
         en_zh("With io_uring the program asks for a read and is told when it is done: the "
               "kernel waits for the data and copies it, and the program makes no recv or send "
               "call.",
               "用 io_uring 时，程序只提交一个读请求，读完了由内核通知它：等待数据和拷贝数据都"
               "由内核完成，程序自己不调用 recv 或 send。"),
         uring_phases},
        {12, "12-multi-reactor",
         en_zh("Several reactors use several cores", "多个 Reactor 能用上多个核"),
         en_zh("One event loop runs on one core; several loops, each with its share of the "
               "connections, can use several cores at once.",
               "一个事件循环只能跑在一个核上；多个事件循环各自负责一部分连接，就能同时用上多个"
               "核。"),
         multi_reactor},
        {13, "13-emulated-proactor",
         en_zh("A proactor can be emulated on a reactor", "Proactor 可以在 Reactor 之上模拟出来"),
         en_zh("Completion-style handlers (\"this read finished\") can be built on readiness "
               "(epoll) by doing the read in user space when the socket is ready, as Asio does "
               "on Linux.",
               "完成式的处理器（“这次读已经完成”）可以建立在就绪通知（epoll）之上：套接字就绪时"
               "在用户态把读做完再通知处理器，Asio 在 Linux 上就是这样做的。"),
         emulated_proactor},
        {14, "14-connection-pool",
         en_zh("Reusing connections saves their setup", "复用连接省掉建立连接的开销"),
         en_zh("Connecting for every request pays a handshake, an accept and a close each time; "
               "keeping connections open (a pool) saves all three.",
               "每个请求都新建连接，每次都要付出一次握手、一次 accept 和一次 close；让连接一直"
               "开着（连接池），这三样就都省了。"),
         connection_pool},
    };
    return all;
}

}  // namespace iolab
