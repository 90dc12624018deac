# frozen_string_literal: true

module Bench
  # CPU time and context switches of a group of processes (every thread of
  # each), read from /proc before and after a phase: what serving the
  # phase's requests cost each part of a server.
  class ProcessCost
    TICKS_PER_SECOND = 100 # USER_HZ, the unit of utime and stime

    Reading = Struct.new(:cpu_seconds, :switches) do
      def -(other) = Reading.new(cpu_seconds - other.cpu_seconds, switches - other.switches)
    end

    def self.read(pids)
      pids.map { |pid| read_one(pid) }.reduce(Reading.new(0.0, 0)) do |sum, one|
        Reading.new(sum.cpu_seconds + one.cpu_seconds, sum.switches + one.switches)
      end
    end

    def self.read_one(pid)
      # Fields after the command name, which may itself hold spaces.
      fields = File.read("/proc/#{pid}/stat").split(") ", 2).last.split
      cpu = (fields[11].to_i + fields[12].to_i).to_f / TICKS_PER_SECOND
      switches = Dir.glob("/proc/#{pid}/task/*/status").sum do |status|
        text = File.read(status)
        text[/^voluntary_ctxt_switches:\s+(\d+)/, 1].to_i + text[/^nonvoluntary_ctxt_switches:\s+(\d+)/, 1].to_i
      rescue Errno::ENOENT
        0 # a thread that just ended
      end
      Reading.new(cpu, switches)
    rescue Errno::ENOENT
      Reading.new(0.0, 0)
    end

    # Runs the block and returns its result with the cost per request, in
    # microseconds of CPU and context switches, of the front (what faces
    # clients) and of the workers.
    def self.per_request(target)
      front_pids = target.front_pids
      worker_pids = target.worker_pids
      before = [read(front_pids), read(worker_pids)]
      result = yield
      after = [read(front_pids), read(worker_pids)]
      requests = [result.requests, 1].max.to_f
      front, workers = after.zip(before).map { |a, b| a - b }
      cost = {
        front_us: front.cpu_seconds * 1e6 / requests,
        workers_us: workers.cpu_seconds * 1e6 / requests,
        front_switches: front.switches / requests,
        workers_switches: workers.switches / requests,
      }
      [result, cost]
    end
  end
end
