#!/usr/bin/env ruby
# frozen_string_literal: true

# HTTP/2 side by side on loopback: nginx (`listen ... ssl http2`, `try_files
# $uri @unicorn`) in front of Unicorn against Unicorn with Nightmare! (an
# ssl block and try_files), the same certificate, directory and app, two
# Ruby workers and two nginx workers / front loops each. h2load with 16
# connections; the two take turns in every phase, and a phase's ratio is
# the median of its rounds' ratios. The front's CPU per request and peak
# RSS are read from /proc. Prints the figures and writes
# bench/results/http2.md.
#
#   rake bench_http2   (BENCH_SECONDS=10 BENCH_H2_ROUNDS=3 by default;
#                       BENCH_H2_ONLY="1 MiB" runs only the phases so named)
require "tmpdir"
require "fileutils"
require "open3"

ROOT = File.expand_path("..", __dir__)
require_relative "../support/local_processes"
UNICORN_BIN = LocalProcesses.unicorn_bin
require_relative "tls_static_targets"
require_relative "load"
require_relative "machine"
require_relative "process_cost"

SECONDS = Integer(ENV.fetch("BENCH_SECONDS", "10"))
ROUNDS = Integer(ENV.fetch("BENCH_H2_ROUNDS", "3"))
CONNECTIONS = 16
PEER = "nginx+unicorn"
OURS = "unicorn+nightmare"
RSS_TARGET_MIB = 64

%w[h2load nginx openssl].each do |tool|
  system("command -v #{tool} >/dev/null", exception: false) or abort "bench needs #{tool}: run script/bench"
end

def h2load(target, path, streams)
  Bench::H2load.run(target.tls_url(path), seconds: SECONDS, connections: CONNECTIONS, streams: streams)
end

# name => how to measure one round on a target
PHASES = {
  "app page, 1 stream per connection" => ->(t) { h2load(t, "/", 1) },
  "app page, 10 streams per connection" => ->(t) { h2load(t, "/", 10) },
  "small static file, 10 streams per connection" => ->(t) { h2load(t, "/small.css", 10) },
  "1 MiB from the app, 1 stream per connection" => ->(t) { h2load(t, "/1m", 1) },
}.select { |phase, _| phase.include?(ENV.fetch("BENCH_H2_ONLY", "")) }.freeze

results = {}
memory = {}
Dir.mktmpdir("nightmare-bench-h2") do |root|
  site = Bench::Site.make(root)
  # nginx ends a connection after keepalive_requests (1000) requests, and
  # h2load does not connect again within a timed run; the front has no such
  # limit on HTTP/2 connections.
  nginx = Bench::NginxTlsStatic.new(PEER, File.join(root, "nginx"), site).start("keepalive_requests 1000000;")
  targets = { PEER => nginx,
              OURS => Bench::NightmareTlsStatic.new(OURS, File.join(root, "ours"), site).start }
  begin
    targets.each_value { |target| Bench::H2load.run(target.tls_url("/"), seconds: 2, connections: CONNECTIONS, streams: 1) }
    PHASES.each do |phase, measure|
      warn "== #{phase}, #{ROUNDS} rounds"
      results[phase] = Array.new(ROUNDS) do |round|
        order = round.even? ? [PEER, OURS] : [OURS, PEER]
        order.to_h do |name|
          result, cost = Bench::ProcessCost.per_request(targets[name]) { measure.call(targets[name]) }
          warn format("   round %d %-18s %s  front %.1f us/request", round + 1, name, result, cost[:front_us])
          [name, [result, cost]]
        end
      end
    end
    memory = targets.transform_values(&:front_peak_rss_kib)
  ensure
    targets.each_value(&:stop)
  end
end

lines = ["Run #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')} on #{Bench.machine}; h2load #{CONNECTIONS} connections " \
         "for #{SECONDS}s, #{ROUNDS} alternating rounds per phase; HTTPS with an ECDSA P-256 certificate; " \
         "2 workers each; medians of rounds.", ""]
lines << "| phase | nginx+unicorn | unicorn+nightmare | nightmare/nginx | front CPU per request, nginx / nightmare |"
lines << "|---|---|---|---|---|"
checks = []
results.each do |phase, rounds|
  figure = lambda do |name|
    values = rounds.map { |round| round[name].first }
    failed = values.sum(&:failed)
    format("%.0f req/s", Bench.median(values.map(&:requests_per_second))) + (failed.positive? ? ", #{failed} failed" : "")
  end
  cpu = ->(name) { format("%.1f us", Bench.median(rounds.map { |round| round[name].last[:front_us] })) }
  ratios = rounds.map do |round|
    theirs = round[PEER].first.requests_per_second
    theirs.positive? ? round[OURS].first.requests_per_second / theirs : 0.0
  end
  ratio = Bench.median(ratios)
  lines << "| #{phase} | #{figure.call(PEER)} | #{figure.call(OURS)} | #{format('%.2f', ratio)} | " \
           "#{cpu.call(PEER)} / #{cpu.call(OURS)} |"
  checks << ["#{phase}: nightmare >= 1.0 x nginx", ratio >= 1.0]
end
lines << ""
lines << "Peak RSS of what faces clients: nightmare front #{memory[OURS]} KiB; nginx workers #{memory[PEER]} KiB."
lines << ""
lines << "Targets (issue: at least 1.0 x nginx's HTTP/2 req/s on each row, front RSS at most #{RSS_TARGET_MIB} MiB):"
checks << ["front peak RSS <= #{RSS_TARGET_MIB} MiB", memory[OURS].to_i <= RSS_TARGET_MIB * 1024]
checks.each { |name, met| lines << "- #{met ? 'met' : 'MISSED'}: #{name}" }
report = lines.join("\n")
puts report
# A run of some phases only is not the benchmark's result.
unless ENV.key?("BENCH_H2_ONLY")
  FileUtils.mkdir_p(File.join(ROOT, "bench", "results"))
  File.write(File.join(ROOT, "bench", "results", "http2.md"), "#{report}\n")
end
