# frozen_string_literal: true

require "json"
require_relative "../stats"

module Nightmare
  # Runs in the front process, forked from the master: starts the Rust event
  # loops, then spends its life in IO.select, passing their log lines to
  # Unicorn's logger and turning signals and master messages into calls on
  # the front. Never returns: the process ends with exit!, since it is not
  # the master and must not run the application's at_exit hooks.
  class FrontProcess
    # A quiet pause between checks that the loops are alive.
    CHECK_INTERVAL = 1.0

    # +early_signals+ is the queue the master's signal handlers fill: a
    # signal that arrives between fork and #trap_signals lands there.
    # +listeners+ are [io, ssl block index or nil] pairs, indexing +tls_blocks+.
    # +local+ is the master's own workers ({socket:, secret:, workers:}),
    # nil for a standalone front. +access_log+ is the open access log File,
    # or nil.
    def initialize(logger:, options:, listeners:, tls_blocks:, local:, control:, access_log: nil, early_signals: [])
      @logger = logger
      @options = options
      @listeners = listeners
      @tls_blocks = tls_blocks
      @local = local
      @control = control
      @access_log = access_log
      @signals = []
      @early_signals = early_signals
    end

    def run
      trap_signals
      raise_descriptor_limit
      log_reader, log_writer = IO.pipe
      @front = Nightmare::Native::Front.start(
        options: @options.to_native, listeners: @listeners.map { |io, tls| [io.fileno, tls] },
        tls: @tls_blocks.map(&:to_native), local: @local, log_fd: log_writer.fileno,
        access_log_fd: @access_log&.fileno
      )
      log_writer.close
      @logger.info "nightmare front ready: #{@options[:threads]} threads on #{describe_listeners}, " \
                   "#{describe_upstreams}, #{describe_temp_budget}"
      supervise(log_reader)
      forward_log(log_reader)
      @logger.info "nightmare front exiting"
      exit!(0)
    rescue Exception => e # rubocop:disable Lint/RescueException
      @logger.error "nightmare front failed: #{e.message} (#{e.class})"
      e.backtrace&.first(5)&.each { |line| @logger.error(line) }
      exit!(1)
    end

    private

    def describe_listeners
      @listeners.map do |io, tls|
        name = Unicorn::SocketHelper.sock_name(io)
        tls ? "https://#{name}" : name
      end.join(", ")
    end

    def describe_upstreams
      upstreams = @options[:upstreams]
      others = upstreams ? upstreams[:servers].size + upstreams[:routes].sum { |_, servers| servers.size } : 0
      parts = []
      parts << "#{@local[:workers]} workers" if @local
      parts << "#{others} upstream servers" if others.positive? || !@local
      parts.join(" and ")
    end

    def describe_temp_budget
      limit = @front.stats[:temp_path_max_size]
      where = "temp files in #{@options[:temp_path]}"
      limit.zero? ? "#{where} without a total limit" : "#{where} up to #{limit >> 20} MiB in all"
    end

    def trap_signals
      @wake_reader, @wake_writer = IO.pipe
      %i[QUIT TERM INT USR1].each do |signal|
        trap(signal) do
          @signals << signal
          @wake_writer.write_nonblock(".", exception: false)
        end
      end
      # Meant for the master; a stray one must not kill the front.
      %i[HUP USR2 WINCH TTIN TTOU].each { |signal| trap(signal, nil) }
      trap(:CHLD, "DEFAULT")
      @signals.concat(@early_signals & %i[QUIT TERM INT USR1])
      @early_signals.clear
    end

    # A descriptor per client, plus worker sockets and temp files (bounded by
    # the worker count): raise the soft limit to fit, as nginx's
    # worker_rlimit_nofile does.
    def raise_descriptor_limit
      wanted = @options[:max_connections] + 1024
      soft, hard = Process.getrlimit(:NOFILE)
      return if soft >= wanted

      Process.setrlimit(:NOFILE, [wanted, hard].min, hard)
      return if hard >= wanted

      @logger.warn "nightmare max_connections=#{@options[:max_connections]} wants #{wanted} " \
                   "descriptors but the hard limit is #{hard} (raise `ulimit -Hn`)"
    end

    def supervise(log_reader)
      readers = [log_reader, @control, @wake_reader]
      until @front.finished?
        ready, = IO.select(readers, nil, nil, @front.stopping? ? 0.1 : CHECK_INTERVAL)
        forward_log(log_reader) if ready&.include?(log_reader)
        read_control(readers) if ready&.include?(@control)
        handle_signals
        check_threads
        publish_stats
      end
      @front.join
    end

    # At most once a second, for Nightmare.stats in the master and workers.
    def publish_stats
      now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      return if @stats_written_at && now - @stats_written_at < CHECK_INTERVAL

      @stats_written_at = now
      Stats.write(Stats.path, @front.stats.merge(pid: Process.pid, updated_at: Time.now.to_f))
    rescue SystemCallError => e
      @logger.warn "nightmare front cannot write its stats: #{e.message}"
    end

    def handle_signals
      @wake_reader.read_nonblock(64, exception: false)
      while (signal = @signals.shift)
        case signal
        when :QUIT
          @logger.info "nightmare front stopping: no new clients; finishing the requests in progress " \
                       "(shutdown_timeout #{@options[:shutdown_timeout]}s)"
          @front.stop(true)
        when :TERM, :INT
          @logger.info "nightmare front stopping at once (#{signal})"
          @front.stop(false)
        when :USR1
          # The access log is one of them: reopened in place, the front's
          # writes go on to the new file.
          @logger.info "nightmare front: reopening its log files"
          Unicorn::Util.reopen_logs
          @logger.info "nightmare front: log files reopened"
        end
      end
    end

    # The master writes "workers N" and "tls [...]" lines; EOF means the
    # master is gone, and a front without a master finishes what it has
    # and exits.
    def read_control(readers)
      case data = @control.read_nonblock(65_536, exception: false)
      when :wait_readable then nil
      when nil
        readers.delete(@control)
        @logger.warn "nightmare front: master is gone, finishing requests in progress"
        @front.stop(true)
      else
        @pending_control = (@pending_control || +"") << data
        while (line = @pending_control.slice!(/\A[^\n]*\n/))
          obey(line.chomp)
        end
      end
    end

    def obey(line)
      case line
      when /\Aworkers (\d+)\z/
        @front.worker_count = Integer($1)
        @logger.info "nightmare front dispatching to #{$1} workers"
      when /\Atls (.*)\z/
        reload_tls(JSON.parse($1, symbolize_names: true))
      end
    end

    # A file that went bad between the master's check and now keeps the
    # certificates in use.
    def reload_tls(blocks)
      @front.reload_tls(blocks)
      @logger.info "nightmare front loaded new certificates"
    rescue ArgumentError => e
      @logger.error "nightmare front kept its certificates: #{e.message}"
    end

    # A loop thread only ends early if a bug took it down: stop the rest, and
    # the master will start a fresh front.
    def check_threads
      return if @front.stopping? || @front.finished_threads.zero?

      @logger.error "nightmare front: an event loop thread died; stopping so the master starts a new front"
      @front.stop(false)
    end

    def forward_log(log_reader)
      while (chunk = log_reader.read_nonblock(65_536, exception: false)).is_a?(String)
        @pending_log = (@pending_log || +"") << chunk
        while (line = @pending_log.slice!(/\A[^\n]*\n/))
          level = { "W" => :warn, "E" => :error }.fetch(line[0], :info)
          @logger.__send__(level, "nightmare: #{line[1..].chomp}")
        end
      end
    end
  end
end
