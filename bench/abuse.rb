#!/usr/bin/env ruby
# frozen_string_literal: true

# The attacks of the 2026-12 review, each beside ordinary clients, against
# nginx+unicorn and unicorn+nightmare in the same run (a fresh server for
# each phase, so each peak is the phase's own):
#
# - 32 uploads of 3 MB of 1-byte chunks, beside fast clients and a 20 MiB
#   upload (timed alone first);
# - 3 clients that never read a 50 MiB response, with nightmare's
#   temp_path_max_size at 64 MiB, beside fast clients, small GETs and a
#   20 MiB download;
# - an access log whose disk stops (a FIFO nobody reads) under requests
#   whose lines escape to 64 KiB;
# - 500 and 2,000 slow readers of 8 MiB (slowhttptest -X, windows of 512 to
#   1024 bytes), beside fast clients and a 1-second probe twice a second;
#   then 2,000 again from an address of their own (a network namespace at
#   198.51.100.2, as an attacker on the internet has), while the fast
#   clients and probes stay on 127.0.0.1.
#
# Prints what the front held (peak RSS, kernel TCP memory), what the other
# clients got, and how each attack ended; writes bench/results/abuse.md.
#
#   rake bench_abuse   (BENCH_SECONDS=10 BENCH_READERS="500 2000" by default)
require "tmpdir"
require "json"

ROOT = File.expand_path("..", __dir__)
require_relative "../support/local_processes"
UNICORN_BIN = LocalProcesses.unicorn_bin
require_relative "targets"
require_relative "load"
require_relative "machine"

SECONDS = Integer(ENV.fetch("BENCH_SECONDS", "10"))
READER_COUNTS = ENV.fetch("BENCH_READERS", "500 2000").split.map { |count| Integer(count) }
FAST_CONNECTIONS = 16
MIB = 1 << 20
PEER = "nginx+unicorn"
OURS = "unicorn+nightmare"
STATUS = "/_nightmare"

%w[wrk nginx slowhttptest curl].each do |tool|
  system("command -v #{tool} >/dev/null", exception: false) or abort "bench needs #{tool}: run script/bench"
end

def monotonic = Process.clock_gettime(Process::CLOCK_MONOTONIC)
def rss_kib(pids) = pids.sum { |pid| File.read("/proc/#{pid}/status")[/VmRSS:\s+(\d+)/, 1].to_i rescue 0 }
def peak_kib(pids) = pids.sum { |pid| LocalProcesses.peak_rss_kib(pid) }

# Kernel memory of every TCP socket on the machine, and where Linux starts
# refusing it (tcp_mem's pressure mark), in MiB.
def tcp_memory_mib = File.read("/proc/net/sockstat")[/TCP:.* mem (\d+)/, 1].to_i * 4096 / MIB.to_f
def tcp_pressure_mib = File.read("/proc/sys/net/ipv4/tcp_mem").split[1].to_i * 4096 / MIB.to_f

def start(name, root, nightmare: {}, nginx: "", listen_also: nil)
  if name == OURS
    Bench::UnicornNightmare.new(name, root, settings: nightmare, config: "status_path #{STATUS.inspect}",
                                            listen_also: listen_also).start
  else
    Bench::NginxUnicorn.new(name, root, server: nginx, listen_also: listen_also).start
  end
end

# A network namespace the attackers run in, at an address of their own
# (TEST-NET-2, which the front counts as public), joined to this host by a
# veth pair; yields the command prefix that runs in it, or nil (saying
# why) where namespaces cannot be made.
ATTACKER_NETNS = "nightmare-abuse"
HOST_SIDE = "198.51.100.1"
ATTACKER_SIDE = "198.51.100.2"

def with_attacker_address
  unless Process.euid.zero? && system("command -v ip >/dev/null")
    warn "   (not root, or no iproute2: the attackers stay on 127.0.0.1)"
    return yield(nil)
  end
  setup = ["ip netns add #{ATTACKER_NETNS}", "ip link add nmabuse0 type veth peer name nmabuse1",
           "ip link set nmabuse1 netns #{ATTACKER_NETNS}", "ip addr add #{HOST_SIDE}/24 dev nmabuse0",
           "ip link set nmabuse0 up", "ip -n #{ATTACKER_NETNS} addr add #{ATTACKER_SIDE}/24 dev nmabuse1",
           "ip -n #{ATTACKER_NETNS} link set nmabuse1 up", "ip -n #{ATTACKER_NETNS} link set lo up"]
  setup.each { |command| system(command, exception: true) }
  yield ["ip", "netns", "exec", ATTACKER_NETNS]
ensure
  system("ip link del nmabuse0", err: File::NULL)
  system("ip netns del #{ATTACKER_NETNS}", err: File::NULL)
end

# The front's own figures (nightmare only).
def figures(target)
  JSON.parse(IO.popen(["curl", "-s", "-m", "5", target.url(STATUS)], &:read))
rescue JSON::ParserError
  {}
end

def log_count(target, pattern)
  File.read(File.join(target.dir, "unicorn.log")).scan(pattern).size
end

# A GET that must answer within +limit+ seconds; its time, or nil.
def timed_get(url, limit)
  started = monotonic
  system("curl", "-sf", "-o", "/dev/null", "-m", limit.to_s, url) ? monotonic - started : nil
end

# A 1-second probe twice a second while the block runs: [failed, sent].
def probing(url)
  counts = [0, 0]
  running = true
  prober = Thread.new do
    while running
      counts[1] += 1
      counts[0] += 1 unless timed_get(url, 1)
      sleep 0.5
    end
  end
  yield
  running = false
  prober.join
  counts
end

def wrk_in_background(target, headers: {})
  Thread.new { Bench::Wrk.run(target.url, seconds: SECONDS, connections: FAST_CONNECTIONS, headers: headers) }
end

def upload_of_one_byte_chunks(port, wire_bytes)
  socket = TCPSocket.new("127.0.0.1", port)
  socket.write("POST /upload HTTP/1.1\r\nHost: bench\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
  piece = "1\r\na\r\n" * 10_000
  (wire_bytes / piece.bytesize).times { socket.write(piece) }
  socket.write("0\r\n\r\n")
  reply = socket.read
  reply[%r{\AHTTP/1\.1 (\d{3})}, 1].to_i
rescue SystemCallError
  0
ensure
  socket&.close
end

def one_byte_chunks(name, root)
  target = start(name, root)
  alone = Bench::Upload.run(target.port, 20 * MIB)
  before = peak_kib(target.front_pids)
  rss_before = rss_kib(target.front_pids)
  started = monotonic
  attackers = Array.new(32) { Thread.new { upload_of_one_byte_chunks(target.port, 3_000_000) } }
  fast = wrk_in_background(target)
  sleep 0.3
  beside = Bench::Upload.run(target.port, 20 * MIB)
  statuses = attackers.map(&:value)
  attack_seconds = monotonic - started
  result = { fast: fast.value, alone: alone, beside: beside, grown: peak_kib(target.front_pids) - before,
             attack_seconds: attack_seconds, statuses: statuses.tally }
  sleep 2
  result.merge(after: rss_kib(target.front_pids) - rss_before)
ensure
  target&.stop
end

def never_reading(port, path)
  socket = TCPSocket.new("127.0.0.1", port)
  socket.setsockopt(Socket::SOL_SOCKET, Socket::SO_RCVBUF, 4096)
  socket.write("GET #{path} HTTP/1.1\r\nHost: bench\r\n\r\n")
  socket
end

# Whether the server ended the connection (reset, or closed).
def ended?(socket)
  deadline = monotonic + 1
  while monotonic < deadline
    next unless socket.wait_readable(0.2)
    return true if socket.read_nonblock(MIB, exception: false).nil?
  end
  false
rescue Errno::ECONNRESET
  true
end

def spent_budget(name, root)
  target = start(name, root, nightmare: { temp_path_max_size: "64m" })
  holders = Array.new(3) { never_reading(target.port, "/50m") }
  sleep 1 # the budget is spent, and both workers wait on it
  fast = wrk_in_background(target)
  small = Array.new(5) { timed_get(target.url, 30).tap { sleep 0.2 } }
  download = Bench::Download.run(target.url("/20m"), 20 * MIB)
  result = { fast: fast.value, small: small, download: download,
             killed: log_count(target, /timeout \(\d+s > \d+s\), killing/),
             ended: holders.count { |socket| ended?(socket) }, shed: figures(target)["clients_shed"] }
  holders.each(&:close)
  result
ensure
  target&.stop
end

def stuck_log(name, root)
  fifo = File.join(root, "#{name.gsub(/\W/, '-')}-access.fifo")
  File.mkfifo(fifo)
  # Opened first: the server's open of the FIFO waits for a reader.
  reader = File.open(fifo, File::RDONLY | File::NONBLOCK)
  target = start(name, root, nightmare: { access_log: fifo }, nginx: "access_log #{fifo} combined;")
  before = peak_kib(target.front_pids)
  quotes = '"' * 8000
  fast = Bench::Wrk.run(target.url, seconds: SECONDS, connections: FAST_CONNECTIONS,
                                    headers: { "User-Agent" => quotes, "Referer" => quotes })
  { fast: fast, grown: peak_kib(target.front_pids) - before,
    lost: name == OURS ? figures(target)["access_log_lines_lost"] : nil }
ensure
  target&.stop
  reader&.close
end

# +prefix+ runs the attackers from their own address (see
# with_attacker_address); nil keeps them on 127.0.0.1.
def slow_readers(name, root, count, prefix = nil)
  target = start(name, root, listen_also: prefix && HOST_SIDE)
  attacked = prefix ? "http://#{HOST_SIDE}:#{target.port}/8m" : target.url("/8m")
  peak = tcp_memory_mib
  sampling = true
  sampler = Thread.new do
    while sampling
      peak = [peak, tcp_memory_mib].max
      sleep 0.2
    end
  end
  log = File.join(root, "slowhttptest-#{name.gsub(/\W/, '-')}-#{count}.log")
  attack = Process.spawn(*prefix, "slowhttptest", "-X", "-c", count.to_s, "-r", "500", "-l", (SECONDS + 20).to_s,
                         "-p", "5", "-w", "512", "-y", "1024", "-n", "5", "-z", "32", "-k", "3", "-u", attacked,
                         out: log, err: %i[child out])
  sleep 5 # they connect at 500 a second
  fast = nil
  failed, sent = probing(target.url) { fast = Bench::Wrk.run(target.url, seconds: SECONDS, connections: FAST_CONNECTIONS) }
  result = { fast: fast, peak: peak, probes_failed: failed, probes: sent, rss: rss_kib(target.front_pids) }
  if name == OURS
    stats = figures(target)
    result[:ended] = "#{stats['slow_readers_closed']} cut for send_timeout or send_min_rate, " \
                     "#{stats['clients_shed']} shed, #{stats['requests_waited_for_own_address']} waited for their " \
                     "address's earlier ones"
  end
  result
ensure
  sampling = false
  sampler&.join
  if attack
    Process.kill(:INT, attack)
    Process.wait(attack)
  end
  target&.stop
  sleep 2
end

def both(label)
  [PEER, OURS].to_h do |name|
    result = yield(name)
    warn format("   %-18s %s", name, result.reject { |key, _| key == :fast }.merge(fast: result[:fast].to_s.strip))
    [name, result]
  end
end

def fast_cell(result) = format("%.0f req/s, p99 %.0f ms, %d failed", result.requests_per_second, result.p99_ms, result.failed)
def seconds(value) = value ? format("%.2f s", value) : "failed"
# Fast clients answered (wrk counts a request that failed as made), a
# second.
def served_per_second(result) = result.requests_per_second * (result.requests - result.failed) / [result.requests, 1].max

# nightmare/nginx in fast clients served; nil when neither served any,
# infinite when only nginx served none.
def ratio(results)
  ours, theirs = results.values_at(OURS, PEER).map { |r| served_per_second(r[:fast]) }
  return if ours.zero? && theirs.zero?

  theirs.zero? ? Float::INFINITY : ours / theirs
end

def shown_ratio(results)
  value = ratio(results)
  return "neither served a fast client" unless value

  value.infinite? ? "nginx+unicorn served none" : format("%.2f", value)
end

results = {}
Dir.mktmpdir("nightmare-bench-abuse") do |root|
  warn "== 1-byte chunks"
  results[:chunks] = both("chunks") { |name| one_byte_chunks(name, root) }
  warn "== spent temp budget"
  results[:budget] = both("budget") { |name| spent_budget(name, root) }
  warn "== stuck access log"
  results[:log] = both("log") { |name| stuck_log(name, root) }
  READER_COUNTS.each do |count|
    warn "== #{count} slow readers of 8 MiB"
    results[count] = both("readers") { |name| slow_readers(name, root, count) }
  end
  warn "== #{READER_COUNTS.max} slow readers of 8 MiB from an address of their own"
  with_attacker_address do |prefix|
    results[:own_address] = both("readers") { |name| slow_readers(name, root, READER_COUNTS.max, prefix) }
    results[:own_address_is_own] = !prefix.nil?
  end
end

lines = ["Run #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')} on #{Bench.machine}; wrk #{FAST_CONNECTIONS} " \
         "connections for #{SECONDS}s beside each attack; a fresh server per phase; kernel TCP memory pressure " \
         "at #{tcp_pressure_mib.round} MiB.", ""]

chunks = results[:chunks]
lines.push("**32 uploads of 3 MB of 1-byte chunks** (500 kB decoded each):", "")
lines << "| server | front peak RSS grew | RSS after | attack took | its uploads | fast clients | 20 MiB upload alone / beside |"
lines << "|---|---|---|---|---|---|---|"
chunks.each do |name, r|
  lines << "| #{name} | #{r[:grown] >> 10} MiB | +#{r[:after] >> 10} MiB | #{seconds(r[:attack_seconds])} | " \
           "#{r[:statuses].map { |status, n| "#{n} x #{status}" }.join(', ')} | #{fast_cell(r[:fast])} | " \
           "#{seconds(r[:alone])} / #{seconds(r[:beside])} |"
end

budget = results[:budget]
lines.push("", "**3 clients that never read 50 MiB** (nightmare's temp_path_max_size 64 MiB; nginx has no total):", "")
lines << "| server | small GETs (slowest) | 20 MiB download | fast clients | workers killed by Unicorn's timeout | non-readers ended |"
lines << "|---|---|---|---|---|---|"
budget.each do |name, r|
  slowest = r[:small].all? ? seconds(r[:small].max) : "#{r[:small].count(nil)} of 5 failed"
  ended = name == OURS ? "#{r[:ended]} (#{r[:shed]} shed)" : r[:ended].to_s
  lines << "| #{name} | #{slowest} | #{seconds(r[:download])} | #{fast_cell(r[:fast])} | #{r[:killed]} | #{ended} |"
end

log = results[:log]
lines.push("", "**An access log whose disk stops** (a FIFO nobody reads; User-Agent and Referer of 8,000 quotes):", "")
lines << "| server | front peak RSS grew | requests | lines lost |"
lines << "|---|---|---|---|"
log.each do |name, r|
  lines << "| #{name} | #{r[:grown] >> 10} MiB | #{fast_cell(r[:fast])} | #{r[:lost] || 'n/a (it blocks)'} |"
end

READER_COUNTS.each do |count|
  readers = results[count]
  lines.push("", "**#{count} slow readers of 8 MiB** (slowhttptest -X -w 512 -y 1024 -n 5 -z 32):", "")
  lines << "| server | kernel TCP memory peak | 1 s probes failed | fast clients | front RSS | how they ended |"
  lines << "|---|---|---|---|---|---|"
  readers.each do |name, r|
    lines << "| #{name} | #{r[:peak].round} MiB | #{r[:probes_failed]} of #{r[:probes]} | #{fast_cell(r[:fast])} | " \
             "#{r[:rss] >> 10} MiB | #{r[:ended] || ''} |"
  end
end

own = results[:own_address]
lines.push("", "**#{READER_COUNTS.max} slow readers of 8 MiB from an address of their own** " \
               "(#{results[:own_address_is_own] ? "#{ATTACKER_SIDE}, a network namespace" : 'no namespace here: 127.0.0.1'}; " \
               "fast clients and probes on 127.0.0.1):", "")
lines << "| server | kernel TCP memory peak | 1 s probes failed | fast clients | front RSS | how they ended |"
lines << "|---|---|---|---|---|---|"
own.each do |name, r|
  lines << "| #{name} | #{r[:peak].round} MiB | #{r[:probes_failed]} of #{r[:probes]} | #{fast_cell(r[:fast])} | " \
           "#{r[:rss] >> 10} MiB | #{r[:ended] || ''} |"
end

ours = ->(key) { results[key][OURS] }
checks = [
  ["32 x 3 MB of 1-byte chunks raise the front's peak RSS by under 32 MiB (#{ours.(:chunks)[:grown] >> 10} MiB)",
   ours.(:chunks)[:grown] < 32 << 10],
  ["and it comes back (#{ours.(:chunks)[:after] >> 10} MiB above the start after)", ours.(:chunks)[:after] < 16 << 10],
  ["the 20 MiB upload beside them within 2x its time alone (#{seconds(ours.(:chunks)[:beside])} / " \
   "#{seconds(ours.(:chunks)[:alone])})",
   ours.(:chunks)[:beside] && ours.(:chunks)[:alone] && ours.(:chunks)[:beside] <= 2 * ours.(:chunks)[:alone]],
  ["with the budget spent, small GETs and the 20 MiB download are served, no worker killed",
   ours.(:budget)[:small].all? && ours.(:budget)[:download] && ours.(:budget)[:killed].zero?],
  ["and no small GET waits over 5 s (slowest #{seconds(ours.(:budget)[:small].compact.max)})",
   ours.(:budget)[:small].all? { |time| time && time <= 5 }],
  ["a stuck access log costs under 16 MiB (#{ours.(:log)[:grown] >> 10} MiB)", ours.(:log)[:grown] < 16 << 10],
]
READER_COUNTS.each do |count|
  r = results[count]
  checks << ["#{count} slow readers: 0 failed probes through nightmare (#{r[OURS][:probes_failed]})",
             r[OURS][:probes_failed].zero?]
  checks << ["#{count} slow readers: kernel TCP memory below the pressure mark (#{r[OURS][:peak].round} MiB)",
             r[OURS][:peak] < tcp_pressure_mib]
  checks << ["#{count} slow readers: fast clients served >= 1.0 x nginx+unicorn (#{shown_ratio(r)})",
             ratio(r).to_f >= 1.0]
end
checks << ["#{READER_COUNTS.max} slow readers from their own address: 0 failed probes through nightmare " \
           "(#{own[OURS][:probes_failed]})", own[OURS][:probes_failed].zero?]
checks << ["#{READER_COUNTS.max} slow readers from their own address: fast clients served >= 1.0 x nginx+unicorn " \
           "(#{shown_ratio(own)})", ratio(own).to_f >= 1.0]
lines << ""
checks.each { |what, met| lines << "- #{met ? 'met' : 'MISSED'}: #{what}" }
report = lines.join("\n")
puts report
File.write(File.join(__dir__, "results", "abuse.md"), "#{report}\n")
