#!/usr/bin/env ruby
# frozen_string_literal: true

# Side-by-side benchmark on loopback, two Ruby workers per server: unicorn
# alone, nginx in front of unicorn, unicorn with Nightmare!, and puma, each
# under the same loads in one run. Prints figures and the Nightmare/nginx
# ratios, and writes them to bench/results/latest.md.
#
#   rake bench            (BENCH_SECONDS=10 BENCH_ATTACKERS=500 by default)
require "tmpdir"
require "etc"
require "fileutils"

ROOT = File.expand_path("..", __dir__)
require_relative "../support/local_processes"
UNICORN_BIN = LocalProcesses.unicorn_bin
require_relative "targets"
require_relative "load"

SECONDS = Integer(ENV.fetch("BENCH_SECONDS", "10"))
ATTACKERS = Integer(ENV.fetch("BENCH_ATTACKERS", "500"))
FAST_CONNECTIONS = 16
UPLOAD_BYTES = 50 << 20
TARGETS = {
  "unicorn" => Bench::UnicornAlone,
  "nginx+unicorn" => Bench::NginxUnicorn,
  "unicorn+nightmare" => Bench::UnicornNightmare,
  "puma" => Bench::Puma,
}.freeze

%w[wrk slowhttptest nginx puma].each do |tool|
  system("command -v #{tool} >/dev/null", exception: false) or abort "bench needs #{tool}: run script/bench"
end

def attack_phase(target, mode, path)
  log = File.join(target.dir, "slowhttptest#{mode}.log")
  attack = Bench::SlowAttack.new(mode, target.url(path), connections: ATTACKERS, seconds: SECONDS + 15, log: log).start
  sleep 5 # the attackers connect at 250 a second
  Bench::Wrk.run(target.url, seconds: SECONDS, connections: FAST_CONNECTIONS)
ensure
  attack&.stop
  sleep 2 # let the server drop the attackers before the next phase
end

results = Hash.new { |h, k| h[k] = {} }
memory = {}
Dir.mktmpdir("nightmare-bench") do |root|
  TARGETS.each do |name, klass|
    warn "== #{name}"
    target = klass.new(name, root).start
    begin
      Bench::Wrk.run(target.url, seconds: 2, connections: FAST_CONNECTIONS) # warm-up
      results["fast clients"][name] = Bench::Wrk.run(target.url, seconds: SECONDS, connections: FAST_CONNECTIONS)
      warn "   fast:      #{results['fast clients'][name]}"
      results["during slowloris"][name] = attack_phase(target, "-H", "/")
      warn "   slowloris: #{results['during slowloris'][name]}"
      results["during slow bodies"][name] = attack_phase(target, "-B", "/upload")
      warn "   slow body: #{results['during slow bodies'][name]}"
      results["during slow reads of 1 MiB"][name] = attack_phase(target, "-X", "/1m")
      warn "   slow read 1 MiB: #{results['during slow reads of 1 MiB'][name]}"
      results["during slow reads of 8 MiB"][name] = attack_phase(target, "-X", "/8m")
      warn "   slow read 8 MiB: #{results['during slow reads of 8 MiB'][name]}"
      results["50 MiB upload"][name] = Bench::Upload.run(target.port, UPLOAD_BYTES)
      warn "   upload:    #{results['50 MiB upload'][name]&.round(2).inspect} s"
      memory[name] = target.front_peak_rss_kib
    ensure
      target.stop
    end
  end
end

def cell(value)
  case value
  when Bench::Result
    if value.requests.zero?
      "stalled: no request answered"
    else
      format("%.0f req/s, p99 %.1f ms, %d failed", value.requests_per_second, value.p99_ms, value.failed)
    end
  when Float then format("%.2f s", value)
  when nil then "failed"
  end
end

def ratio(results, phase)
  ours = results[phase]["unicorn+nightmare"]
  theirs = results[phase]["nginx+unicorn"]
  if ours.is_a?(Bench::Result) && theirs.is_a?(Bench::Result) && theirs.requests_per_second.positive?
    format("%.2f", ours.requests_per_second / theirs.requests_per_second)
  elsif ours.is_a?(Float) && theirs.is_a?(Float)
    format("%.2f (time)", ours / theirs)
  else
    "n/a"
  end
end

machine = "#{Etc.nprocessors} cores, #{(File.read('/proc/meminfo')[/MemTotal:\s+(\d+)/, 1].to_i / 1024.0**2).round} GiB, " \
          "#{File.read('/etc/debian_version').strip rescue 'Linux'}" # rubocop:disable Style/RescueModifier
lines = []
lines << "Run #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')} on #{machine}; wrk #{FAST_CONNECTIONS} connections " \
         "for #{SECONDS}s per phase, #{ATTACKERS} slowhttptest attackers, #{Bench::WORKERS} workers per server."
lines << ""
lines << "| phase | #{TARGETS.keys.join(' | ')} | nightmare/nginx |"
lines << "|---|#{'---|' * TARGETS.size}---|"
results.each do |phase, by_target|
  lines << "| #{phase} | #{TARGETS.keys.map { |name| cell(by_target[name]) }.join(' | ')} | #{ratio(results, phase)} |"
end
lines << ""
lines << "Peak RSS of what faces clients: nightmare front #{memory['unicorn+nightmare']} KiB; " \
         "nginx workers #{memory['nginx+unicorn']} KiB (sum)."

# A phase in which no fast request was answered meets no target, whatever
# the peers did.
checks = []
fast = results["fast clients"]
checks << ["fast clients: nightmare >= 0.9 x nginx+unicorn",
           fast["unicorn+nightmare"].requests.positive? &&
             fast["unicorn+nightmare"].requests_per_second >= 0.9 * fast["nginx+unicorn"].requests_per_second]
["during slowloris", "during slow bodies", "during slow reads of 1 MiB", "during slow reads of 8 MiB"].each do |phase|
  ours = results[phase]["unicorn+nightmare"]
  answered = ours.requests.positive? && ours.requests > ours.failed
  checks << ["#{phase}: nightmare req/s >= nginx+unicorn",
             answered && ours.requests_per_second >= results[phase]["nginx+unicorn"].requests_per_second]
  checks << ["#{phase}: no failed fast request through nightmare", answered && ours.failed.zero?]
end
front_rss = memory["unicorn+nightmare"]
checks << ["nightmare front peak RSS under 64 MiB (#{front_rss} KiB)", front_rss && front_rss < 64 * 1024]
lines << ""
checks.each { |name, met| lines << "- #{met ? 'met' : 'MISSED'}: #{name}" }

report = lines.join("\n")
puts report
FileUtils.mkdir_p(File.join(__dir__, "results"))
File.write(File.join(__dir__, "results", "latest.md"), "#{report}\n")
