#!/usr/bin/env ruby
# frozen_string_literal: true

# Counts the system calls each part of nginx+unicorn and unicorn+nightmare
# makes per request, over a fixed number of keep-alive requests (hey), with
# `strace -c -f` attached to what faces clients and to the Ruby workers.
# strace slows everything down, so this says nothing about speed: it runs
# apart from the timed benchmark.
#
#   script/syscalls    (SYSCALLS_REQUESTS=20000 by default)
require "tmpdir"

ROOT = File.expand_path("..", __dir__)
require_relative "../support/local_processes"
UNICORN_BIN = LocalProcesses.unicorn_bin
require_relative "targets"

REQUESTS = Integer(ENV.fetch("SYSCALLS_REQUESTS", "20000"))
CONNECTIONS = 16

%w[strace hey nginx].each do |tool|
  system("command -v #{tool} >/dev/null", exception: false) or abort "needs #{tool}: run script/syscalls"
end

# Calls per syscall name, from strace's -c summary: "% time, seconds,
# usecs/call, calls, [errors,] syscall" rows; the total is summed here.
def counts(summary)
  summary.lines.each_with_object({}) do |line, counts|
    fields = line.split
    next unless fields.size >= 5 && fields[0].match?(/\A\d+\.\d+\z/) && fields.last != "total"

    counts[fields.last] = Integer(fields[3])
  end
end

# Syscall counts of +pids+ (every thread) while +requests+ requests run.
def traced(pids, url)
  return {} if pids.empty?

  output = File.join(Dir.tmpdir, "nightmare-strace-#{Process.pid}-#{rand(1 << 30)}.txt")
  strace = Process.spawn("strace", "-c", "-f", "-qq", "-o", output, *pids.flat_map { |pid| ["-p", pid.to_s] },
                         err: File::NULL)
  sleep 1 # attaching takes a moment
  system("hey", "-n", REQUESTS.to_s, "-c", CONNECTIONS.to_s, url, out: File::NULL, exception: true)
  Process.kill(:INT, strace)
  Process.waitpid(strace)
  counts(File.read(output))
ensure
  File.delete(output) if output && File.exist?(output)
end

report = {}
Dir.mktmpdir("nightmare-syscalls") do |root|
  { "nginx+unicorn" => Bench::NginxUnicorn, "unicorn+nightmare" => Bench::UnicornNightmare }.each do |name, klass|
    target = klass.new(name, root).start
    begin
      system("hey", "-n", "2000", "-c", CONNECTIONS.to_s, target.url, out: File::NULL, exception: true) # warm-up
      report[name] = { front: traced(target.front_pids, target.url), workers: traced(target.worker_pids, target.url) }
    ensure
      target.stop
    end
  end
end

puts "System calls per request, #{REQUESTS} keep-alive requests from #{CONNECTIONS} connections " \
     "(strace -c -f; #{Time.now.utc.strftime('%Y-%m-%d %H:%M UTC')}):"
puts
{ front: "what faces clients (nginx workers / nightmare front)", workers: "the Ruby workers" }.each do |part, label|
  puts "#{label}:"
  report.each do |name, parts|
    calls = parts[part]
    frequent = calls.select { |_, count| count >= REQUESTS / 100 }.sort_by { |_, count| -count }
    detail = frequent.map { |syscall, count| format("%s %.2f", syscall, count.to_f / REQUESTS) }.join(", ")
    puts format("  %-18s %6.2f   (%s)", name, calls.values.sum.to_f / REQUESTS, detail)
  end
  puts
end
