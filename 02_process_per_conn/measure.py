# The figures of 02_process_per_conn/README.md, "Measured beside 02": a blocking server on
# 127.0.0.1:PORT driven over loopback, and what the kernel says about its whole process tree
# (the server, its threads, its live children, the children it has reaped), read from /proc.
#
#   python3 02_process_per_conn/measure.py PORT SERVER_PID [creation]
#
# `creation` stops after the first figure, for servers that serve one client at a time (01) or
# a few (the pool), which the 200 held connections of the others would stall.
import glob, os, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
HZ = os.sysconf('SC_CLK_TCK')

def read(path):
    try:
        return open(path).read()
    except OSError:
        return ''  # the process exited meanwhile

def children():
    return [int(p.split('/')[2]) for p in glob.glob('/proc/[0-9]*/stat')
            if read(p).rsplit(')', 1)[-1].split()[1:2] == [str(pid)]]

def field(path, name):  # one number from /proc/.../status or smaps_rollup
    for line in read(path).splitlines():
        if line.startswith(name + ':'):
            return int(line.split()[1])
    return 0

def ticks(p, fields):  # fields of /proc/p/stat after the command name, 0-based from state
    f = read(f'/proc/{p}/stat').rsplit(')', 1)[-1].split()
    return sum(int(f[i]) for i in fields) if f else 0

def cpu_s():  # the server, all its threads, its live children, and every child it has reaped
    return (ticks(pid, range(11, 15)) + sum(ticks(k, [11, 12]) for k in children())) / HZ

def ask(s):
    s.sendall(b'PING\n')
    return s.recv(64)

# 1. creation: 1,000 sequential connections, connect to first reply, and CPU per connection
lat = []
c0 = cpu_s()
for i in range(1000):
    t = time.perf_counter()
    s = socket.create_connection(('127.0.0.1', port))
    ask(s)
    lat.append(time.perf_counter() - t)
    s.close()
time.sleep(0.5)  # every child exited and reaped: its CPU is in cutime/cstime now
lat.sort()
print(f'connect to first reply: p50 {lat[500]*1e6:.0f} us, p90 {lat[900]*1e6:.0f} us; '
      f'server CPU {(cpu_s()-c0)/1000*1e6:.0f} us per connection')

if sys.argv[3:] == ['creation']:
    sys.exit(0)

# 2. memory: 200 idle connections (one PING each), PSS and RSS summed over the process tree
def mem():
    procs = [pid] + children()
    return (sum(field(f'/proc/{p}/smaps_rollup', 'Pss') for p in procs),
            sum(field(f'/proc/{p}/smaps_rollup', 'Rss') for p in procs))
p0, r0 = mem()
conns = [socket.create_connection(('127.0.0.1', port)) for i in range(200)]
for s in conns:
    ask(s)
time.sleep(0.3)
p1, r1 = mem()
print(f'200 idle connections: PSS +{(p1-p0)/200:.0f} KiB per connection, '
      f'RSS summed +{(r1-r0)/200:.0f} KiB per connection')

# 3. context switches: 20 of the connections, 500 lock-step rounds of PING (10,000 requests)
def switches():
    files = glob.glob(f'/proc/{pid}/task/*/status') + [f'/proc/{k}/status' for k in children()]
    return sum(field(f, 'voluntary_ctxt_switches') + field(f, 'nonvoluntary_ctxt_switches')
               for f in files)
x0, u0 = switches(), cpu_s()
for k in range(500):
    for s in conns[:20]:
        s.sendall(b'PING\n')
    for s in conns[:20]:
        s.recv(64)
x1, u1 = switches(), cpu_s()
print(f'10,000 requests on 20 connections: {(x1-x0)/10000:.2f} context switches and '
      f'{(u1-u0)/10000*1e6:.0f} us of server CPU per request')
for s in conns:
    s.close()
