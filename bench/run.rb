#!/usr/bin/env ruby
# frozen_string_literal: true

# Side-by-side benchmark on loopback, two Ruby workers per server: unicorn
# alone, nginx in front of unicorn, unicorn with Nightmare!, and puma, each
# under the same loads in one run. nginx+unicorn and unicorn+nightmare take
# turns in rounds of every phase (the machine drifts between runs), the
# fast-client rounds with the CPU time and context switches each part spends
# per request; unicorn alone and puma run each phase once, for context.
# Prints figures and the Nightmare/nginx ratios, and writes them to
# bench/results/latest.md.
#
#   rake bench     (BENCH_SECONDS=10 BENCH_ROUNDS=5 BENCH_ATTACK_ROUNDS=3
#                   BENCH_ATTACKERS=500 by default)
require "tmpdir"
require "fileutils"

ROOT = File.expand_path("..", __dir__)
require_relative "../support/local_processes"
UNICORN_BIN = LocalProcesses.unicorn_bin
require_relative "targets"
require_relative "load"
require_relative "machine"
require_relative "process_cost"

SECONDS = Integer(ENV.fetch("BENCH_SECONDS", "10"))
ROUNDS = Integer(ENV.fetch("BENCH_ROUNDS", "5"))
ATTACK_ROUNDS = Integer(ENV.fetch("BENCH_ATTACK_ROUNDS", "3"))
ATTACKERS = Integer(ENV.fetch("BENCH_ATTACKERS", "500"))
FAST_CONNECTIONS = 16
UPLOAD_BYTES = 50 << 20
TARGETS = {
  "unicorn" => Bench::UnicornAlone,
  "nginx+unicorn" => Bench::NginxUnicorn,
  "unicorn+nightmare" => Bench::UnicornNightmare,
  "puma" => Bench::Puma,
}.freeze
OURS = "unicorn+nightmare"
PEER = "nginx+unicorn"

%w[wrk slowhttptest nginx puma].each do |tool|
  system("command -v #{tool} >/dev/null", exception: false) or abort "bench needs #{tool}: run script/bench"
end

# Attacks run beside wrk's fast clients; nil is the phase without one.
PHASES = {
  "fast clients" => nil,
  "during slowloris" => ["-H", "/"],
  "during slow bodies" => ["-B", "/upload"],
  "during slow reads of 1 MiB" => ["-X", "/1m"],
  "during slow reads of 8 MiB" => ["-X", "/8m"],
}.freeze
UPLOADS = 3

def fast_clients(target)
  Bench::Wrk.run(target.url, seconds: SECONDS, connections: FAST_CONNECTIONS)
end

def attack_phase(target, mode, path)
  log = File.join(target.dir, "slowhttptest#{mode}.log")
  attack = Bench::SlowAttack.new(mode, target.url(path), connections: ATTACKERS, seconds: SECONDS + 15, log: log).start
  sleep 5 # the attackers connect at 250 a second
  fast_clients(target)
ensure
  attack&.stop
  sleep 2 # let the server drop the attackers before the next phase
end

def run_phase(target, attack) = attack ? attack_phase(target, *attack) : fast_clients(target)

def median(values)
  sorted = values.sort
  sorted.size.odd? ? sorted[sorted.size / 2] : (sorted[sorted.size / 2 - 1] + sorted[sorted.size / 2]) / 2.0
end

# Rounds of one phase: the round with the median req/s stands for them,
# with every round's requests and failures counted.
def combine(results)
  middle = results.sort_by(&:requests_per_second)[results.size / 2]
  Bench::Result.new(requests_per_second: middle.requests_per_second, p99_ms: middle.p99_ms,
                    requests: results.sum(&:requests), failed: results.sum(&:failed))
end

# The median of each round's Nightmare/nginx ratio: rounds pair runs made
# minutes apart, which is what cancels the machine's drift.
def round_ratio(rounds)
  per_round = rounds.map do |round|
    theirs = round[PEER].requests_per_second
    theirs.positive? ? round[OURS].requests_per_second / theirs : 0.0
  end
  median(per_round)
end

def uploads(target) = Array.new(UPLOADS) { Bench::Upload.run(target.port, UPLOAD_BYTES) }
def median_upload(times) = times.all? ? median(times) : nil

# nginx+unicorn and unicorn+nightmare side by side, taking turns in every
# phase (the order swapped each round, so neither always runs on a warmer
# machine). Fast-client rounds also record what each request cost.
def paired_phases(root, results, ratios, memory)
  targets = [PEER, OURS].to_h { |name| [name, TARGETS.fetch(name).new(name, root).start] }
  targets.each_value { |target| Bench::Wrk.run(target.url, seconds: 2, connections: FAST_CONNECTIONS) }
  in_turns = lambda do |rounds, &measure|
    Array.new(rounds) do |round|
      (round.even? ? [PEER, OURS] : [OURS, PEER]).to_h { |name| [name, measure.call(targets[name], name, round)] }
    end
  end
  warn "== fast clients, #{ROUNDS} rounds"
  fast = in_turns.call(ROUNDS) do |target, name, round|
    result, cost = Bench::ProcessCost.per_request(target) { fast_clients(target) }
    warn format("   round %d %-18s %s", round + 1, name, result)
    { result: result, cost: cost }
  end
  [PEER, OURS].each { |name| results["fast clients"][name] = combine(fast.map { |round| round[name][:result] }) }
  ratios["fast clients"] = round_ratio(fast.map { |round| round.transform_values { |run| run[:result] } })
  PHASES.each do |phase, attack|
    next unless attack

    warn "== #{phase}, #{ATTACK_ROUNDS} rounds"
    rounds = in_turns.call(ATTACK_ROUNDS) do |target, name, round|
      run_phase(target, attack).tap { |result| warn format("   round %d %-18s %s", round + 1, name, result) }
    end
    [PEER, OURS].each { |name| results[phase][name] = combine(rounds.map { |round| round[name] }) }
    ratios[phase] = round_ratio(rounds)
  end
  times = in_turns.call(UPLOADS) { |target, _, _| Bench::Upload.run(target.port, UPLOAD_BYTES) }
  [PEER, OURS].each { |name| results["50 MiB upload"][name] = median_upload(times.map { |round| round[name] }) }
  targets.each { |name, target| memory[name] = target.front_peak_rss_kib }
  fast
ensure
  targets&.each_value(&:stop)
end

# Unicorn alone and puma, for context: each phase once.
def single_phases(root, name, results)
  warn "== #{name}"
  target = TARGETS.fetch(name).new(name, root).start
  Bench::Wrk.run(target.url, seconds: 2, connections: FAST_CONNECTIONS) # warm-up
  PHASES.each do |phase, attack|
    results[phase][name] = run_phase(target, attack)
    warn "   #{phase}: #{results[phase][name]}"
  end
  results["50 MiB upload"][name] = median_upload(uploads(target))
ensure
  target&.stop
end

results = Hash.new { |h, k| h[k] = {} }
ratios = {}
memory = {}
rounds = nil
Dir.mktmpdir("nightmare-bench") do |root|
  rounds = paired_phases(root, results, ratios, memory)
  (TARGETS.keys - [PEER, OURS]).each { |name| single_phases(root, name, results) }
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

def ratio(results, ratios, phase)
  ours = results[phase][OURS]
  theirs = results[phase][PEER]
  if ratios[phase]
    format("%.2f", ratios[phase])
  elsif ours.is_a?(Float) && theirs.is_a?(Float)
    format("%.2f (time)", ours / theirs)
  else
    "n/a"
  end
end

lines = []
lines << "Run #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')} on #{Bench.machine}; wrk #{FAST_CONNECTIONS} connections " \
         "for #{SECONDS}s per phase, #{ATTACKERS} slowhttptest attackers, #{Bench::WORKERS} workers per server."
lines << ""
lines << "Fast clients, #{ROUNDS} alternating rounds (req/s; per request: CPU of what faces clients and of the " \
         "Ruby workers, and their context switches):"
lines << ""
lines << "| round | nginx+unicorn | unicorn+nightmare | ratio |"
lines << "|---|---|---|---|"
fast_ratios = rounds.each_with_index.map do |round, index|
  theirs = round[PEER][:result].requests_per_second
  ours = round[OURS][:result].requests_per_second
  lines << format("| %d | %.0f | %.0f | %.2f |", index + 1, theirs, ours, ours / theirs)
  ours / theirs
end
lines << format("| median | | | **%.2f** |", median(fast_ratios))
lines << ""
lines << "| per request (median of rounds) | nginx+unicorn | unicorn+nightmare |"
lines << "|---|---|---|"
[["front CPU (nginx workers / nightmare front)", :front_us, "%.1f µs"],
 ["Ruby workers' CPU", :workers_us, "%.1f µs"],
 ["front context switches", :front_switches, "%.2f"],
 ["workers' context switches", :workers_switches, "%.2f"]].each do |label, key, format_string|
  figures = [PEER, OURS].map { |name| format(format_string, median(rounds.map { |round| round[name][:cost][key] })) }
  lines << "| #{label} | #{figures.join(' | ')} |"
end
lines << ""
lines << "Every phase (nginx+unicorn and unicorn+nightmare: the median of #{ATTACK_ROUNDS} alternating rounds, " \
         "#{ROUNDS} for fast clients, with failures over all rounds, and the median of the rounds' ratios; " \
         "unicorn and puma: one run each):"
lines << ""
lines << "| phase | #{TARGETS.keys.join(' | ')} | nightmare/nginx |"
lines << "|---|#{'---|' * TARGETS.size}---|"
results.each do |phase, by_target|
  label = phase == "50 MiB upload" ? "50 MiB upload (median of #{UPLOADS})" : phase
  lines << "| #{label} | #{TARGETS.keys.map { |name| cell(by_target[name]) }.join(' | ')} | #{ratio(results, ratios, phase)} |"
end
lines << ""
lines << "Peak RSS of what faces clients: nightmare front #{memory[OURS]} KiB; " \
         "nginx workers #{memory[PEER]} KiB (sum)."

# A phase in which no fast request was answered meets no target, whatever
# the peers did.
checks = []
checks << ["fast clients: nightmare >= 1.0 x nginx+unicorn (median of #{ROUNDS} rounds: #{format('%.2f', median(fast_ratios))})",
           median(fast_ratios) >= 1.0]
["during slowloris", "during slow bodies", "during slow reads of 1 MiB", "during slow reads of 8 MiB"].each do |phase|
  ours = results[phase][OURS]
  answered = ours.requests.positive? && ours.requests > ours.failed
  checks << ["#{phase}: nightmare req/s >= nginx+unicorn (median of the rounds' ratios)",
             answered && ratios[phase] >= 1.0]
  checks << ["#{phase}: no failed fast request through nightmare", answered && ours.failed.zero?]
end
upload = results["50 MiB upload"]
checks << ["50 MiB upload byte-exact through nightmare, in no more time than through nginx",
           upload[OURS].is_a?(Float) && upload[PEER].is_a?(Float) && upload[OURS] <= upload[PEER]]
front_rss = memory[OURS]
checks << ["nightmare front peak RSS under 64 MiB (#{front_rss} KiB)", front_rss && front_rss < 64 * 1024]
lines << ""
checks.each { |name, met| lines << "- #{met ? 'met' : 'MISSED'}: #{name}" }

report = lines.join("\n")
puts report
FileUtils.mkdir_p(File.join(__dir__, "results"))
File.write(File.join(__dir__, "results", "latest.md"), "#{report}\n")
