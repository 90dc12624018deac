# frozen_string_literal: true

require "socket"

module Nightmare
  # The master's side of the front: owns the handoff channel (one
  # SOCK_SEQPACKET pair for the master's whole life, so workers keep their
  # end across front restarts), forks the front, and looks after it the way
  # the master looks after workers. Lives in the master only.
  class FrontSupervisor
    # A front that dies within QUICK_DEATH of starting is restarted after
    # RESPAWN_DELAY, so a front that cannot start does not fork in a tight
    # loop; any other death is answered at once.
    QUICK_DEATH = 1.0
    RESPAWN_DELAY = 0.5

    attr_reader :pid

    def initialize(logger)
      @logger = logger
      @front_end, @worker_end = Socket.pair(:UNIX, :SEQPACKET)
      @pid = nil
      @control = nil
      @not_before = 0.0
    end

    def running?
      !@pid.nil?
    end

    # Starts a front unless one runs (or a quick death is being waited out).
    # The block runs in the new process before the front starts: the master
    # uses it to drop what only the master may hold.
    # Seconds the master may sleep before the front needs it.
    def seconds_until_respawn
      running? ? Float::INFINITY : [@not_before - now, 0].max
    end

    def maintain(options, listeners, workers, &in_child)
      return if running? || now < @not_before

      control_reader, control_writer = IO.pipe
      @pid = fork do
        control_writer.close
        @worker_end.close
        early_signals = in_child&.call || []
        FrontProcess.new(logger: @logger, options: options, listeners: listeners, channel: @front_end,
                         control: control_reader, workers: workers, early_signals: early_signals).run
      end
      control_reader.close
      @control = control_writer
      @started_at = now
      @logger.info "nightmare front spawned pid=#{@pid}"
    end

    # Called for every child the master reaps that is not a worker; true if
    # it was the front.
    def reaped?(status, stopping:)
      return false unless @pid && status.pid == @pid

      @control&.close
      @control = nil
      @pid = nil
      if stopping
        @logger.info "nightmare front reaped #{status.inspect}"
      else
        quick = now - @started_at < QUICK_DEATH
        @not_before = now + RESPAWN_DELAY if quick
        @logger.error "nightmare front died: #{status.inspect}; starting a new one" \
                      "#{quick ? " in #{RESPAWN_DELAY}s" : ''}"
      end
      true
    end

    def worker_count=(count)
      @control&.write_nonblock("workers #{count}\n", exception: false)
    rescue Errno::EPIPE
      # The front died; its replacement starts with the right count.
    end

    # Stops the front and waits for it, at most +timeout+ seconds; a front
    # still there after that is killed.
    def shutdown(graceful, timeout)
      return unless @pid

      signal(graceful ? :QUIT : :TERM)
      deadline = now + timeout
      until reap_nonblock
        if now > deadline
          signal(:KILL)
          deadline = now + timeout
        end
        sleep 0.05
      end
    end

    def signal(name)
      Process.kill(name, @pid) if @pid
    rescue Errno::ESRCH
      # Already gone; reaping will tell.
    end

    # In a new worker: the worker keeps only its end of the channel.
    def acceptor_for_worker
      @front_end.close
      @control&.close
      HandoffAcceptor.new(@worker_end)
    end

    private

    def reap_nonblock
      pid, status = Process.waitpid2(@pid, Process::WNOHANG)
      pid ? reaped?(status, stopping: true) : false
    rescue Errno::ECHILD
      @pid = nil
      true
    end

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
