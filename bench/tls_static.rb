#!/usr/bin/env ruby
# frozen_string_literal: true

# HTTPS and static files, side by side on loopback: nginx (TLS, `try_files
# $uri @unicorn`) in front of Unicorn against Unicorn with Nightmare! (an
# ssl block and try_files), the same certificate and the same directory,
# two Ruby workers and two nginx workers / front loops each. The two take
# turns in every phase; a phase's ratio is the median of its rounds'
# ratios. Prints the figures and writes bench/results/tls_static.md.
#
#   rake bench_tls   (BENCH_SECONDS=10 BENCH_TLS_ROUNDS=3 BENCH_TLS_DOWNLOAD_ROUNDS=7 by default;
#                     BENCH_TLS_ONLY=regexp runs the phases it matches)
require "tmpdir"
require "fileutils"
require "open3"

ROOT = File.expand_path("..", __dir__)
require_relative "../support/local_processes"
UNICORN_BIN = LocalProcesses.unicorn_bin
require_relative "tls_static_targets"
require_relative "load"
require_relative "machine"

SECONDS = Integer(ENV.fetch("BENCH_SECONDS", "10"))
ROUNDS = Integer(ENV.fetch("BENCH_TLS_ROUNDS", "3"))
CONNECTIONS = 16
BIG = 100 << 20
DOWNLOADS = 3
# A 100 MiB download over loopback takes 50-200 ms, so one round of them
# swings by 30%: they get more rounds, which cost seconds, not minutes.
DOWNLOAD_ROUNDS = Integer(ENV.fetch("BENCH_TLS_DOWNLOAD_ROUNDS", "7"))
PEER = "nginx+unicorn"
OURS = "unicorn+nightmare"

%w[wrk nginx curl openssl].each do |tool|
  system("command -v #{tool} >/dev/null", exception: false) or abort "bench needs #{tool}: run script/bench"
end

def wrk(url, headers = {}) = Bench::Wrk.run(url, seconds: SECONDS, connections: CONNECTIONS, headers: headers)

# name => [kind of figure, how to measure one round on a target]
PHASES = {
  "HTTPS keep-alive, app page" => [:rate, ->(t) { wrk(t.tls_url("/")) }],
  "new TLS handshakes (Connection: close), small static file" =>
    [:rate, ->(t) { wrk(t.tls_url("/small.css"), "Connection" => "close") }],
  "static small file, HTTP keep-alive" => [:rate, ->(t) { wrk(t.url("/small.css")) }],
  "static small file, HTTPS keep-alive" => [:rate, ->(t) { wrk(t.tls_url("/small.css")) }],
  "100 MiB HTTPS download from the app" => [:time, ->(t) { Bench::Download.run(t.tls_url("/100m"), BIG) }],
  "100 MiB static file, HTTP" => [:time, ->(t) { Bench::Download.run(t.url("/big.bin"), BIG) }],
  "100 MiB static file, HTTPS" => [:time, ->(t) { Bench::Download.run(t.tls_url("/big.bin"), BIG) }],
  "100 MiB send_file (X-Accel-Redirect), HTTP" =>
    [:time, ->(t) { Bench::Download.run(t.url("/send_file?#{t.site.public_dir}/big.bin"), BIG) }],
  "100 MiB send_file (X-Accel-Redirect), HTTPS" =>
    [:time, ->(t) { Bench::Download.run(t.tls_url("/send_file?#{t.site.public_dir}/big.bin"), BIG) }],
}.freeze
RSA_PHASES = { "new TLS handshakes, RSA 2048 certificate" => PHASES.fetch(
  "new TLS handshakes (Connection: close), small static file"
) }.freeze
ONLY = ENV["BENCH_TLS_ONLY"] && Regexp.new(ENV["BENCH_TLS_ONLY"])
def selected(phases) = ONLY ? phases.select { |name, _| name.match?(ONLY) } : phases

# Each phase in rounds, the order swapped each round; returns
# phase => { ratio:, PEER => [figures], OURS => [figures] }.
def run_pairs(root, kind_of_certificate, site, phases, results, memory)
  targets = { PEER => Bench::NginxTlsStatic.new(PEER, File.join(root, "#{site.object_id}-nginx"), site).start,
              OURS => Bench::NightmareTlsStatic.new(OURS, File.join(root, "#{site.object_id}-ours"), site).start }
  targets.each_value { |target| Bench::Wrk.run(target.tls_url("/"), seconds: 2, connections: CONNECTIONS) }
  phases.each do |phase, (kind, measure)|
    count = kind == :rate ? ROUNDS : DOWNLOAD_ROUNDS
    warn "== #{phase}, #{count} rounds"
    rounds = Array.new(count) do |round|
      order = round.even? ? [PEER, OURS] : [OURS, PEER]
      order.to_h do |name|
        figure = kind == :rate ? measure.call(targets[name]) : Bench.median(Array.new(DOWNLOADS) { measure.call(targets[name]) || Float::INFINITY })
        warn format("   round %d %-18s %s", round + 1, name, kind == :rate ? figure : format("%.3f s", figure))
        [name, figure]
      end
    end
    results[phase] = { kind: kind, rounds: rounds }
  end
  memory[kind_of_certificate] = targets.transform_values(&:front_peak_rss_kib)
ensure
  targets&.each_value(&:stop)
end

def ratio(kind, round)
  ours, theirs = round.values_at(OURS, PEER)
  if kind == :rate
    theirs.requests_per_second.positive? ? ours.requests_per_second / theirs.requests_per_second : 0.0
  else
    ours.finite? && ours.positive? ? theirs / ours : 0.0 # speed: nginx's time over ours
  end
end

results = {}
memory = {}
Dir.mktmpdir("nightmare-bench-tls") do |root|
  [[:ecdsa, PHASES], [:rsa, RSA_PHASES]].each do |kind, phases|
    run_pairs(root, kind, Bench::Site.make(root, kind, big: BIG), selected(phases), results, memory) unless selected(phases).empty?
  end
end

lines = ["Run #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')} on #{Bench.machine}; wrk #{CONNECTIONS} connections " \
         "for #{SECONDS}s, #{ROUNDS} alternating rounds per phase (downloads: #{DOWNLOAD_ROUNDS} rounds, median of " \
         "#{DOWNLOADS} per round); " \
         "ECDSA P-256 certificate unless said; 2 workers each.", ""]
lines << "| phase | nginx+unicorn | unicorn+nightmare | nightmare/nginx (median of rounds) |"
lines << "|---|---|---|---|"
checks = []
results.each do |phase, result|
  kind = result[:kind]
  rounds = result[:rounds]
  figure = lambda do |name|
    values = rounds.map { |round| round[name] }
    if kind == :rate
      format("%.0f req/s", Bench.median(values.map(&:requests_per_second))) +
        (values.sum(&:failed).positive? ? ", #{values.sum(&:failed)} failed" : "")
    else
      format("%.3f s", Bench.median(values))
    end
  end
  ratio_value = Bench.median(rounds.map { |round| ratio(kind, round) })
  lines << "| #{phase} | #{figure.call(PEER)} | #{figure.call(OURS)} | #{format('%.2f', ratio_value)} |"
  target = phase.start_with?("100 MiB") ? 1.0 : 0.9
  checks << ["#{phase}: nightmare >= #{target} x nginx", ratio_value >= target - (target == 1.0 ? 0.05 : 0)]
end
lines << ""
memory.each do |kind, by_target|
  lines << "Peak RSS of what faces clients (#{kind.upcase} servers): nightmare front #{by_target[OURS]} KiB; " \
           "nginx workers #{by_target[PEER]} KiB."
end
lines << ""
lines << "Targets (issue: HTTPS keep-alive and handshakes at least 0.9 x nginx, static small files at least 0.9 x, " \
         "the large file at the same rate, read as within 5%):"
checks.each { |name, met| lines << "- #{met ? 'met' : 'MISSED'}: #{name}" }
report = lines.join("\n")
puts report
# A run of some phases only is not the benchmark's result.
unless ONLY
  FileUtils.mkdir_p(File.join(ROOT, "bench", "results"))
  File.write(File.join(ROOT, "bench", "results", "tls_static.md"), "#{report}\n")
end
