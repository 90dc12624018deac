#!/usr/bin/env ruby
# frozen_string_literal: true

# Slow readers of large responses fill the temp files, nginx's and the
# front's alike; the front's together stay under temp_path_max_size. While
# the readers hold their responses, for nginx+unicorn and unicorn+nightmare
# taking turns (the order swapped each round, as in bench/run.rb): fast
# clients' req/s, a 20 MiB upload (byte-exact), what the temp files hold,
# and the memory of what faces the clients.
#
#   rake bench_temp   (BENCH_READERS=48 BENCH_SECONDS=10 BENCH_ROUNDS=3 by default)
require "tmpdir"

ROOT = File.expand_path("..", __dir__)
require_relative "../support/local_processes"
UNICORN_BIN = LocalProcesses.unicorn_bin
require_relative "targets"
require_relative "load"
require_relative "machine"

READERS = Integer(ENV.fetch("BENCH_READERS", "48"))
SECONDS = Integer(ENV.fetch("BENCH_SECONDS", "10"))
ROUNDS = Integer(ENV.fetch("BENCH_ROUNDS", "3"))
RESPONSE_MIB = 8
BUDGET_MIB = 512
UPLOAD_BYTES = 20 << 20
FAST_CONNECTIONS = 16
PEER = "nginx+unicorn"
OURS = "unicorn+nightmare"

%w[wrk nginx slowhttptest].each do |tool|
  system("command -v #{tool} >/dev/null", exception: false) or abort "bench needs #{tool}: run script/bench"
end

# Bytes in the regular files (temp files, named or unlinked) that +pids+
# hold open.
def temp_bytes(pids)
  pids.sum do |pid|
    Dir.glob("/proc/#{pid}/fd/*").sum do |fd|
      stat = File.stat(fd)
      stat.file? ? stat.size : 0
    rescue SystemCallError
      0
    end
  end
end

def rss_kib(pids) = pids.sum { |pid| File.read("/proc/#{pid}/status")[/VmRSS:\s+(\d+)/, 1].to_i }

def monotonic = Process.clock_gettime(Process::CLOCK_MONOTONIC)

# Waits until what the temp files hold stops growing (the readers' responses
# are spooled as far as they will be), at most +patience+ seconds.
def wait_for_spooling(pids, patience: 40)
  deadline = monotonic + patience
  last = -1
  steady_since = monotonic
  while monotonic < deadline
    now = temp_bytes(pids)
    steady_since = monotonic if now != last
    last = now
    break if now.positive? && monotonic - steady_since >= 2

    sleep 0.5
  end
  last
end

def median(values) = values.sort[values.size / 2]

# One round of one target: readers first, then the measurements beside them.
def measure(target, root, round)
  log = File.join(root, "slowhttptest-#{target.name.gsub(/\W/, '-')}-#{round}.log")
  attack = Bench::SlowAttack.new("-X", target.url("/#{RESPONSE_MIB}m"), connections: READERS,
                                                                        seconds: SECONDS + 60, log: log).start
  spooled = wait_for_spooling(target.front_pids)
  fast = Bench::Wrk.run(target.url, seconds: SECONDS, connections: FAST_CONNECTIONS)
  upload = Bench::Upload.run(target.port, UPLOAD_BYTES)
  { fast: fast, upload: upload, spooled: [spooled, temp_bytes(target.front_pids)].max, rss: rss_kib(target.front_pids) }
ensure
  attack&.stop
  sleep 3 # let the server drop the readers and their files
end

rounds = []
Dir.mktmpdir("nightmare-bench-temp") do |root|
  targets = {
    PEER => Bench::NginxUnicorn.new(PEER, root).start,
    OURS => Bench::UnicornNightmare.new(OURS, root, settings: { temp_path: root, temp_path_max_size: "#{BUDGET_MIB}m" }).start,
  }
  begin
    ROUNDS.times do |round|
      rounds << (round.even? ? [PEER, OURS] : [OURS, PEER]).to_h do |name|
        result = measure(targets[name], root, round)
        warn format("   round %d %-18s %s; upload %s; temp files %d MiB; RSS %d MiB", round + 1, name, result[:fast],
                    result[:upload] ? format("%.2f s", result[:upload]) : "FAILED", result[:spooled] >> 20,
                    result[:rss] >> 10)
        [name, result]
      end
    end
  ensure
    targets.each_value(&:stop)
  end
end

ratios = rounds.map { |round| round[OURS][:fast].requests_per_second / round[PEER][:fast].requests_per_second }
ratio = median(ratios)
ours = rounds.map { |round| round[OURS] }
lines = ["Run #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')} on #{Bench.machine}; #{READERS} slow readers " \
         "(slowhttptest -X) of #{RESPONSE_MIB} MiB each, wrk #{FAST_CONNECTIONS} connections for #{SECONDS}s and a " \
         "#{UPLOAD_BYTES >> 20} MiB upload beside them; nightmare's temp_path_max_size #{BUDGET_MIB} MiB; " \
         "#{ROUNDS} alternating rounds.", ""]
lines << "| round | server | fast clients | #{UPLOAD_BYTES >> 20} MiB upload | temp files | what faces clients: RSS | " \
         "nightmare/nginx |"
lines << "|---|---|---|---|---|---|---|"
rounds.each_with_index do |round, index|
  [PEER, OURS].each do |name|
    r = round[name]
    upload = r[:upload] ? format("%.2f s", r[:upload]) : "failed"
    lines << "| #{index + 1} | #{name} | #{r[:fast].requests_per_second.round} req/s, #{r[:fast].failed} failed | " \
             "#{upload} | #{r[:spooled] >> 20} MiB | #{r[:rss] >> 10} MiB | " \
             "#{name == OURS ? format('%.2f', ratios[index]) : ''} |"
  end
end
lines << "| median | | | | | | **#{format('%.2f', ratio)}** |"
budget_kib = (64 << 10) + 8 * READERS
most_spooled = ours.map { |r| r[:spooled] }.max
most_rss = ours.map { |r| r[:rss] }.max
checks = [
  ["fast clients >= 1.0 x nginx+unicorn (median of the rounds' ratios: #{format('%.2f', ratio)})", ratio >= 1.0],
  ["no failed fast request through nightmare", ours.sum { |r| r[:fast].failed }.zero?],
  ["the upload passes byte-exact through nightmare in every round", ours.all? { |r| r[:upload] }],
  ["temp files within temp_path_max_size (at most #{most_spooled >> 20} of #{BUDGET_MIB} MiB)",
   most_spooled <= BUDGET_MIB << 20],
  ["front RSS under 64 MiB + 8 KiB per reader (at most #{most_rss >> 10} MiB)", most_rss <= budget_kib],
]
lines << ""
checks.each { |what, met| lines << "- #{met ? 'met' : 'MISSED'}: #{what}" }
report = lines.join("\n")
puts report
File.write(File.join(__dir__, "results", "temp_budget.md"), "#{report}\n")
