#!/usr/bin/env ruby
# frozen_string_literal: true

# Thousands of clients that hold a connection and do nothing with it: idle
# keep-alive clients (one request, then silence) and slowloris heads (a
# header line every few seconds, never the end). For nginx+unicorn and
# unicorn+nightmare in turn: the memory of what faces the clients while
# they hold on, and the req/s of fast clients meanwhile. Both servers are
# given room for the holders (nginx: worker_connections, Nightmare:
# max_connections); the holders come from 20 loopback addresses, as a
# crowd would, so no per-address share is reached.
#
#   rake bench_many   (BENCH_HOLDERS=10000 BENCH_SECONDS=10 by default)
require "tmpdir"
require "socket"

ROOT = File.expand_path("..", __dir__)
require_relative "../support/local_processes"
UNICORN_BIN = LocalProcesses.unicorn_bin
require_relative "targets"
require_relative "load"
require_relative "machine"

HOLDERS = Integer(ENV.fetch("BENCH_HOLDERS", "10000"))
SECONDS = Integer(ENV.fetch("BENCH_SECONDS", "10"))
FAST_CONNECTIONS = 16
ADDRESSES = (1..20).map { |i| "127.0.1.#{i}" }.freeze
TRICKLE_EVERY = 5 # seconds between a slowloris holder's header lines
PEER = "nginx+unicorn"
OURS = "unicorn+nightmare"

%w[wrk nginx].each do |tool|
  system("command -v #{tool} >/dev/null", exception: false) or abort "bench needs #{tool}: run script/bench"
end

# Every holder is a descriptor here, and the servers started from here
# inherit the limit.
_, hard = Process.getrlimit(:NOFILE)
abort "bench_many needs #{HOLDERS + 1000} descriptors; the hard limit is #{hard}" if hard < HOLDERS + 1000
Process.setrlimit(:NOFILE, hard, hard)

# Connections that stay open until #close, each from one of ADDRESSES.
class Holders
  def initialize(port, count, kind)
    @kind = kind
    @sockets = Array.new(count) do |i|
      Socket.tcp("127.0.0.1", port, ADDRESSES[i % ADDRESSES.size], 0, connect_timeout: 10)
    end
    case kind
    when :idle
      # In batches: a burst of 10,000 requests at once would meet the
      # front's max_queued_requests (503), which is not what is measured here.
      @sockets.each_slice(500) do |batch|
        batch.each { |s| s.write("GET / HTTP/1.1\r\nHost: bench\r\n\r\n") }
        batch.each { |s| read_response(s) }
      end
    when :slowloris then @sockets.each { |s| s.write("GET / HTTP/1.1\r\nHost: bench\r\n") }
    end
    @running = true
    @trickle = Thread.new { trickle } if kind == :slowloris
  end

  # How many the server still holds (has not closed).
  def open_count = @sockets.count { |s| s.wait_readable(0).nil? }

  def close
    @running = false
    @trickle&.join
    @sockets.each(&:close)
  end

  private

  def trickle
    while @running
      sleep TRICKLE_EVERY
      @sockets.each { |s| s.write_nonblock("X-Hold: #{rand(1000)}\r\n", exception: false) if @running }
    end
  end

  # Reads one small Content-Length response (the bench app's page).
  def read_response(socket)
    data = +""
    data << socket.readpartial(4096) until (head_end = data.index("\r\n\r\n"))
    length = data[/content-length: *(\d+)/i, 1].to_i
    data << socket.readpartial(4096) while data.bytesize < head_end + 4 + length
  end
end

def rss_kib(pids) = pids.sum { |pid| File.read("/proc/#{pid}/status")[/VmRSS:\s+(\d+)/, 1].to_i }

results = {}
Dir.mktmpdir("nightmare-bench-many") do |root|
  targets = {
    PEER => Bench::NginxUnicorn.new(PEER, root, worker_connections: HOLDERS + 4096).start,
    OURS => Bench::UnicornNightmare.new(OURS, root, settings: { max_connections: HOLDERS + 4096 }).start,
  }
  begin
    %i[idle slowloris].each do |kind|
      [PEER, OURS].each do |name|
        target = targets[name]
        warn "== #{HOLDERS} #{kind} clients, #{name}"
        idle_rss = rss_kib(target.front_pids)
        holders = Holders.new(target.port, HOLDERS, kind)
        fast = Bench::Wrk.run(target.url, seconds: SECONDS, connections: FAST_CONNECTIONS)
        rss = rss_kib(target.front_pids)
        held = holders.open_count
        holders.close
        warn "   #{fast}; front RSS #{rss} KiB (#{idle_rss} before); #{held} of #{HOLDERS} still held"
        results[[kind, name]] = { fast: fast, rss: rss, rss_before: idle_rss, held: held }
        sleep 3 # let the server drop the holders
      end
    end
  ensure
    targets.each_value(&:stop)
  end
end

lines = ["Run #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')} on #{Bench.machine}; #{HOLDERS} holders from " \
         "#{ADDRESSES.size} addresses, wrk #{FAST_CONNECTIONS} connections for #{SECONDS}s beside them; one run each.", ""]
lines << "| holders | server | fast clients | what faces clients: RSS | holders still held | nightmare/nginx |"
lines << "|---|---|---|---|---|---|"
checks = []
%i[idle slowloris].each do |kind|
  peer = results[[kind, PEER]]
  ours = results[[kind, OURS]]
  ratio = ours[:fast].requests_per_second / peer[:fast].requests_per_second
  [[PEER, peer], [OURS, ours]].each do |name, r|
    lines << "| #{HOLDERS} #{kind} | #{name} | #{r[:fast].requests_per_second.round} req/s, #{r[:fast].failed} failed | " \
             "#{r[:rss] >> 10} MiB (#{r[:rss_before] >> 10} MiB before) | #{r[:held]} | #{name == OURS ? format('%.2f', ratio) : ''} |"
  end
  budget_kib = (64 << 10) + 8 * HOLDERS
  checks << ["#{kind}: fast clients >= 1.0 x nginx+unicorn (#{format('%.2f', ratio)})", ratio >= 1.0]
  checks << ["#{kind}: no failed fast request through nightmare", ours[:fast].failed.zero?]
  checks << ["#{kind}: front RSS under 64 MiB + 8 KiB per holder (#{ours[:rss] >> 10} MiB, budget #{budget_kib >> 10} MiB)",
             ours[:rss] <= budget_kib]
end
lines << ""
checks.each { |what, met| lines << "- #{met ? 'met' : 'MISSED'}: #{what}" }
report = lines.join("\n")
puts report
File.write(File.join(__dir__, "results", "many_clients.md"), "#{report}\n")
