#!/usr/bin/env ruby
# frozen_string_literal: true

# Fronts for Unicorns on other machines (network namespaces): nginx and
# the `nightmare` executable, each in front of the same Unicorns.
#
# 1. Throughput: two remote Unicorns (2 workers each) behind either front;
#    fast clients, then fast clients during a slowloris, in alternating
#    rounds.
# 2. The nginx failover recipe, run the same way for both: a local Unicorn
#    on a UNIX socket with a backlog of 1 as the primary (fail_timeout=0),
#    three remote Unicorns as backups; clients that overload the primary;
#    one backup's Unicorn killed, another backup's host taken off the
#    network and brought back. Measured: failed requests, the longest wait,
#    the share the local workers served, the time until requests no longer
#    wait on the vanished host and until the restored one is used again.
#
#   rake bench_standalone   (needs root and iproute2 for the namespaces)
require "tmpdir"
require "socket"

ROOT = File.expand_path("..", __dir__)
require_relative "../support/local_processes"
require_relative "../support/test_hosts"
UNICORN_BIN = LocalProcesses.unicorn_bin
require_relative "targets"
require_relative "load"
require_relative "machine"

SECONDS = Integer(ENV.fetch("BENCH_SECONDS", "10"))
ROUNDS = Integer(ENV.fetch("BENCH_ATTACK_ROUNDS", "3"))
# BENCH_PARTS=failover runs the failover recipe alone.
PARTS = ENV.fetch("BENCH_PARTS", "throughput,failover").split(",")
FAST_CONNECTIONS = 16
ATTACKERS = 500
PEER = "nginx"
OURS = "nightmare"

%w[wrk nginx slowhttptest].each do |tool|
  system("command -v #{tool} >/dev/null", exception: false) or abort "bench needs #{tool}: run script/bench"
end
if (reason = TestHost.unavailable_because)
  puts "bench_standalone skipped: #{reason}"
  exit
end

def monotonic = Process.clock_gettime(Process::CLOCK_MONOTONIC)

def wait_for_port(host, port, seconds = 20)
  deadline = monotonic + seconds
  begin
    TCPSocket.new(host, port).close
  rescue SystemCallError
    raise "nothing listens on #{host}:#{port}" if monotonic > deadline

    sleep 0.1
    retry
  end
end

# A Unicorn running bench/app.ru, on a host (namespace) or here: a plain
# listener for nginx and a proxy_protocol one for the front.
class AppUnicorn
  attr_reader :pid, :dir

  def initialize(root, name, host: nil, workers: 2, socket: nil)
    @host = host
    @name = name
    @dir = File.join(root, name)
    FileUtils.mkdir_p(@dir)
    FileUtils.cp(File.join(__dir__, "app.ru"), File.join(@dir, "config.ru"))
    listeners = if host
                  %(listen "#{host.address}:8080"\nlisten "#{host.address}:8081", proxy_protocol: true, ) +
                    %(proxy_protocol_from: ["#{host.near}"])
                else
                  %(listen "#{socket}", backlog: 1)
                end
    File.write(File.join(@dir, "unicorn.conf.rb"), <<~CONFIG)
      require "nightmare"
      worker_processes #{workers}
      #{listeners}
      stderr_path "#{@dir}/unicorn.log"
    CONFIG
  end

  def plain = "#{@host.address}:8080"
  def proxied = "#{@host.address}:8081"

  def start
    command = [RbConfig.ruby, UNICORN_BIN, "-c", File.join(@dir, "unicorn.conf.rb"), File.join(@dir, "config.ru")]
    env = { "RUBYLIB" => File.join(ROOT, "lib"), "RACK_ENV" => "none", "TEST_HOST" => @name }
    options = { chdir: @dir, in: File::NULL, out: File::NULL, err: File::NULL }
    @pid = @host ? @host.spawn(*command, env: env, **options) : Process.spawn(env, *command, **options)
    deadline = monotonic + 30
    sleep 0.1 until File.exist?(log) && File.read(log).scan(/worker=\d+ ready/).size >= 1 || monotonic > deadline
    sleep 1 # the other workers
    self
  end

  def log = File.join(@dir, "unicorn.log")

  def kill
    [@pid, *LocalProcesses.children_of(@pid)].each do |pid|
      Process.kill(:KILL, pid)
    rescue Errno::ESRCH
      next
    end
  end

  def stop
    Process.kill(:QUIT, @pid)
    Process.waitpid(@pid)
  rescue Errno::ESRCH, Errno::ECHILD
    nil
  end
end

# A front here: nginx, or the nightmare executable, with +upstream+ lines.
class Front
  attr_reader :port

  def initialize(root, kind, upstream)
    @kind = kind
    @dir = File.join(root, "front-#{kind}")
    FileUtils.mkdir_p(@dir)
    @port = LocalProcesses.free_port
    @upstream = upstream
  end

  def url(path = "/") = "http://127.0.0.1:#{@port}#{path}"

  def start
    base = defined?(Bundler) ? Bundler.unbundled_env : ENV.to_h
    if @kind == PEER
      %w[client_body proxy].each { |d| FileUtils.mkdir_p(File.join(@dir, d)) }
      File.write(File.join(@dir, "nginx.conf"), <<~NGINX)
        daemon off; master_process on; user root; worker_processes 2;
        pid #{@dir}/nginx.pid; error_log #{@dir}/error.log warn;
        worker_rlimit_nofile 10000;
        events { worker_connections 4096; }
        http {
          access_log off;
          client_body_temp_path #{@dir}/client_body; proxy_temp_path #{@dir}/proxy;
          upstream app { #{@upstream} }
          server {
            listen 127.0.0.1:#{@port};
            location / {
              proxy_pass http://app; proxy_buffering on;
              proxy_set_header Host $host;
              proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            }
          }
        }
      NGINX
      @pid = Process.spawn(base, "nginx", "-c", File.join(@dir, "nginx.conf"), out: File::NULL, err: File::NULL,
                                                                               pgroup: true, unsetenv_others: true)
    else
      File.write(File.join(@dir, "nightmare.conf.rb"), <<~CONFIG)
        listen "127.0.0.1:#{@port}"
        stderr_path "#{@dir}/nightmare.log"
        #{@upstream}
      CONFIG
      @pid = Process.spawn(base.merge("RUBYLIB" => File.join(ROOT, "lib")), RbConfig.ruby,
                           File.join(ROOT, "bin", "nightmare"), "-c", File.join(@dir, "nightmare.conf.rb"),
                           out: File::NULL, err: File::NULL, pgroup: true, unsetenv_others: true)
    end
    wait_for_port("127.0.0.1", @port)
    sleep 1
    self
  end

  def stop
    Process.kill(:QUIT, @pid)
    deadline = monotonic + 20
    sleep 0.05 until Process.waitpid(@pid, Process::WNOHANG) || monotonic > deadline
    Process.kill(:KILL, -@pid) if monotonic > deadline
  rescue Errno::ESRCH, Errno::ECHILD
    nil
  end
end

def median(values) = values.sort[values.size / 2]

def throughput(root)
  hosts = [TestHost.new(1), TestHost.new(2)]
  apps = hosts.each_with_index.map { |host, i| AppUnicorn.new(root, "host#{i + 1}", host: host).start }
  fronts = {
    PEER => Front.new(root, PEER, apps.map { |app| "server #{app.plain};" }.join(" ")).start,
    OURS => Front.new(root, OURS, "upstream #{apps.map { |app| app.proxied.inspect }.join(', ')}, proxy_protocol: true").start,
  }
  fronts.each_value { |front| Bench::Wrk.run(front.url, seconds: 2, connections: FAST_CONNECTIONS) }
  phases = {}
  { "fast clients" => nil, "during slowloris" => "-H" }.each do |phase, attack|
    warn "== standalone, #{phase}, #{ROUNDS} rounds"
    phases[phase] = Array.new(ROUNDS) do |round|
      (round.even? ? [PEER, OURS] : [OURS, PEER]).to_h do |name|
        front = fronts[name]
        slow = attack && Bench::SlowAttack.new(attack, front.url, connections: ATTACKERS, seconds: SECONDS + 15,
                                                                  log: File.join(root, "slow-#{name}.log")).start
        sleep 3 if slow
        result = Bench::Wrk.run(front.url, seconds: SECONDS, connections: FAST_CONNECTIONS)
        slow&.stop
        warn format("   round %d %-10s %s", round + 1, name, result)
        sleep 2
        [name, result]
      end
    end
  end
  phases
ensure
  fronts&.each_value(&:stop)
  apps&.each(&:stop)
  hosts&.each(&:destroy)
end

# Which host answered GET /work?50, read as a client reads it (a chunked
# or a close-delimited body); :failed for anything but a 200 in time.
def fetch_host(port)
  socket = TCPSocket.new("127.0.0.1", port)
  socket.write("GET /work?50 HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
  reply = +""
  deadline = monotonic + 70
  while monotonic < deadline && socket.wait_readable(deadline - monotonic)
    chunk = socket.read_nonblock(65_536, exception: false)
    break if chunk.nil?

    reply << chunk if chunk.is_a?(String)
  end
  head, body = reply.split("\r\n\r\n", 2)
  return :failed unless head&.start_with?("HTTP/1.1 200") && body

  body = body.split("\r\n")[1].to_s if head.match?(/^transfer-encoding: *chunked/i)
  body.strip.empty? ? :failed : body.strip
rescue SystemCallError, IOError
  :failed
ensure
  socket&.close
end

# One run of the recipe for +kind+: a client loop against the front while
# one backup dies and another vanishes and returns.
def failover(root, kind)
  dir = File.join(root, "failover-#{kind}")
  FileUtils.mkdir_p(dir)
  socket = File.join(dir, "local.sock")
  local = AppUnicorn.new(dir, "local", socket: socket).start
  hosts = (1..3).map { |i| TestHost.new(i) }
  backups = hosts.each_with_index.map { |host, i| AppUnicorn.new(dir, "host#{i + 1}", host: host).start }
  upstream = if kind == PEER
               "server unix:#{socket} fail_timeout=0; " + backups.map { |b| "server #{b.plain} backup;" }.join(" ")
             else
               %(upstream "unix:#{socket}", max_conns: 2, fail_timeout: 0\n) +
                 %(backup #{backups.map { |b| b.proxied.inspect }.join(', ')}, proxy_protocol: true, fail_timeout: 0)
             end
  front = Front.new(dir, kind, upstream).start
  results = Queue.new
  started_at = monotonic
  running = true
  clients = Array.new(12) do
    Thread.new do
      while running
        began = monotonic
        outcome = fetch_host(front.port)
        results << [began - started_at, monotonic - began, outcome]
      end
    end
  end
  events = {}
  at = ->(second, name, &action) {
    sleep [second - (monotonic - started_at), 0].max
    action.call
    events[name] = monotonic - started_at
  }
  at.call(5, :killed) { backups[1].kill }
  at.call(9, :vanished) { hosts[2].vanish }
  at.call(15, :restored) { hosts[2].reappear }
  sleep [22 - (monotonic - started_at), 0].max
  running = false
  clients.each { |client| client.join(75) }
  outcomes = Array.new(results.size) { results.pop }
  if ENV["BENCH_SHOW_SLOWEST"]
    warn "#{kind}: events #{events.transform_values { |t| t.round(2) }}"
    outcomes.max_by(8) { |_, took, _| took }.each { |began, took, host| warn format("  began %.2f took %.2f %s", began, took, host) }
  end
  served = outcomes.reject { |_, _, host| host == :failed }
  after_vanish = outcomes.select { |began, _, _| began >= events[:vanished] && began < events[:restored] }
  host3_back = served.select { |began, took, host| host == "host3" && began + took > events[:restored] }
                     .map { |began, took, _| began + took }.min
  {
    requests: outcomes.size,
    failed: outcomes.size - served.size,
    longest: outcomes.map { |_, took, _| took }.max,
    local_share: served.count { |_, _, host| host == "local" }.fdiv([served.size, 1].max),
    stalled_after_vanish: after_vanish.map { |_, took, _| took }.max.to_f,
    back_after: host3_back && host3_back - events[:restored],
    per_host: served.group_by { |_, _, host| host }.transform_values(&:size),
  }
ensure
  front&.stop
  local&.stop
  backups&.each(&:stop)
  hosts&.each(&:destroy)
end

report = ["Run #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')} on #{Bench.machine}."]
Dir.mktmpdir("nightmare-bench-standalone") do |root|
  checks = []
  phases = PARTS.include?("throughput") ? throughput(root) : {}
  report << "" << "Throughput: nginx and the `nightmare` executable in front of the same two Unicorns (2 workers " \
                  "each) on two network namespaces; wrk #{FAST_CONNECTIONS} connections for #{SECONDS}s, " \
                  "#{ROUNDS} alternating rounds; slowloris: slowhttptest -H with #{ATTACKERS} connections."
  report << "" << "| phase | nginx | nightmare | nightmare/nginx (median of the rounds) |" << "|---|---|---|---|"
  phases.each do |phase, rounds|
    ratios = rounds.map { |round| round[OURS].requests_per_second / round[PEER].requests_per_second }
    best = ->(name) { median(rounds.map { |round| round[name].requests_per_second }) }
    failed = ->(name) { rounds.sum { |round| round[name].failed } }
    report << "| #{phase} | #{best.call(PEER).round} req/s, #{failed.call(PEER)} failed | " \
              "#{best.call(OURS).round} req/s, #{failed.call(OURS)} failed | #{format('%.2f', median(ratios))} |"
    checks << ["#{phase}: nightmare >= 1.0 x nginx (#{format('%.2f', median(ratios))})", median(ratios) >= 1.0]
  end
  next unless PARTS.include?("failover")

  runs = [PEER, OURS].to_h do |kind|
    warn "== failover recipe, #{kind}"
    [kind, failover(root, kind)]
  end
  report << "" << "The failover recipe: a local Unicorn (2 workers) on a UNIX socket with a backlog of 1, three " \
                  "remote Unicorns as backups, fail_timeout=0; 12 clients looping GET /work?50 (50 ms in the app) " \
                  "for 22 s; at 5 s one backup's Unicorn killed, at 9 s another backup's host off the network, " \
                  "back at 15 s. nginx 1.22 with its defaults (proxy_connect_timeout 60s); nightmare with " \
                  "max_conns: 2 on the primary."
  report << "" << "| | nginx | nightmare |" << "|---|---|---|"
  rows = {
    "requests (failed)" => ->(r) { "#{r[:requests]} (#{r[:failed]} failed)" },
    "longest wait of a client" => ->(r) { format("%.2f s", r[:longest]) },
    "longest wait, requests begun while the host was off the network" => ->(r) { format("%.2f s", r[:stalled_after_vanish]) },
    "share served by the local workers" => ->(r) { format("%.0f%%", 100 * r[:local_share]) },
    "restored host used again after" => ->(r) { r[:back_after] ? format("%.1f s", r[:back_after]) : "not within the run" },
    "requests by host" => ->(r) { r[:per_host].sort.map { |host, count| "#{host} #{count}" }.join(", ") },
  }
  rows.each { |label, cell| report << "| #{label} | #{cell.call(runs[PEER])} | #{cell.call(runs[OURS])} |" }
  ours = runs[OURS]
  checks << ["failover: no failed request through nightmare", ours[:failed].zero?]
  checks << ["failover: no client waited more than 2 s on nightmare (#{format('%.2f', ours[:longest])} s)", ours[:longest] <= 2]
  report << ""
  checks.each { |what, met| report << "- #{met ? 'met' : 'MISSED'}: #{what}" }
end
text = report.join("\n")
puts text
File.write(File.join(__dir__, "results", "standalone.md"), "#{text}\n")
