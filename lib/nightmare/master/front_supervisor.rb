# frozen_string_literal: true

require "json"

module Nightmare
  # The master's side of the front: owns the workers' private listener (for
  # the master's whole life, so workers keep it across front restarts;
  # standalone, there are no workers and no listener), forks the front, and
  # looks after it the way the master looks after workers. A front whose
  # settings or listeners changed (HUP) is replaced: the new one starts,
  # then the old one finishes what it accepted. Lives in the master only.
  class FrontSupervisor
    # A front that dies within QUICK_DEATH of starting is restarted after
    # RESPAWN_DELAY, so a front that cannot start does not fork in a tight
    # loop; any other death is answered at once.
    QUICK_DEATH = 1.0
    RESPAWN_DELAY = 0.5

    Front = Struct.new(:pid, :control, :options, :listeners, :tls_blocks, :started_at)

    # +owner+ is Unicorn's `user` setting, which the front switches to.
    # +local_workers+ is false for a standalone front, which has none.
    def initialize(logger, owner, local_workers: true)
      @logger = logger
      @master_pid = Process.pid
      runtime_dir = RuntimeDir.new(owner)
      if local_workers
        @private_listener = PrivateListener.new(runtime_dir)
        @logger.info "nightmare: workers take requests from the front on #{@private_listener.path}"
      end
      Stats.path = runtime_dir.file("stats")
      @current = nil
      @retiring = {}
      @not_before = 0.0
    end

    def running?
      !@current.nil?
    end

    # Fronts still running: the current one and those finishing up.
    def alive?
      running? || !@retiring.empty?
    end

    def pid
      @current&.pid
    end

    # Seconds the master may sleep before the front needs it.
    def seconds_until_respawn
      running? ? Float::INFINITY : [@not_before - now, 0].max
    end

    # Starts a front unless one with these settings runs (or a quick death
    # is being waited out). +tls+ has each listener's TlsSettings, or nil
    # for plain HTTP. New certificates alone are loaded by the running
    # front; other changes start a new one. The block runs in the new
    # process before the front starts: the master uses it to drop what only
    # the master may hold.
    def maintain(options, listeners, tls, workers, &in_child)
      blocks = tls.compact.uniq
      identities = listeners.zip(tls).map { |io, settings| identity(io) << (settings && blocks.index(settings)) }
      retire("its settings changed") if @current && @current.options != options
      retire("the listeners changed") if @current && @current.listeners != identities
      # The ACME thread orders for the names it started with.
      retire("its ACME settings changed") if @current && @current.tls_blocks.map(&:acme) != blocks.map(&:acme)
      reload_tls(blocks) if @current && @current.tls_blocks != blocks
      return if running? || now < @not_before

      control_reader, control_writer = IO.pipe
      begin
        pid = fork do
          run_front(options, listeners.zip(identities.map(&:last)), blocks, workers, control_reader, control_writer,
                    &in_child)
        end
      ensure
        control_reader.close
        control_writer.close unless pid
      end
      @current = Front.new(pid, control_writer, options, identities, blocks, now)
      @logger.info "nightmare front spawned pid=#{pid}"
    end

    # The current front finishes what it accepted and exits (QUIT).
    def retire(reason)
      return unless @current

      @logger.info "nightmare front pid=#{@current.pid} retiring: #{reason}"
      signal(@current.pid, :QUIT)
      @retiring[@current.pid] = @current
      @current = nil
    end

    # Called for every child the master reaps that is not a worker; true if
    # it was a front.
    def reaped?(status, stopping:)
      if (retired = @retiring.delete(status.pid))
        retired.control.close
        @logger.info "nightmare front exited: #{status.inspect}"
        return true
      end
      return false unless @current&.pid == status.pid

      front = @current
      @current = nil
      front.control.close
      if stopping
        @logger.info "nightmare front exited: #{status.inspect}"
      else
        quick = now - front.started_at < QUICK_DEATH
        @not_before = now + RESPAWN_DELAY if quick
        @logger.error "nightmare front died: #{status.inspect}; starting a new one" \
                      "#{quick ? " in #{RESPAWN_DELAY}s" : ''}"
      end
      true
    end

    # Every running front dispatches to the same workers.
    def worker_count=(count)
      fronts.each { |front| tell(front, "workers #{count}") }
    end

    # Stops every front and waits for them, at most +timeout+ seconds each
    # round; a front still there after that is killed.
    def shutdown(graceful, timeout)
      fronts.each { |front| signal(front.pid, graceful ? :QUIT : :TERM) }
      deadline = now + timeout
      until fronts.empty?
        fronts.each { |front| reap_nonblock(front.pid) }
        if now > deadline
          fronts.each { |front| signal(front.pid, :KILL) }
          deadline = now + timeout
        end
        sleep 0.05 unless fronts.empty?
      end
    end

    def signal_all(name)
      fronts.each { |front| signal(front.pid, name) }
    end

    # In a new worker: it accepts the front's requests on the private listener.
    def acceptor_for_worker
      fronts.each { |front| front.control.close }
      HandoffAcceptor.new(@private_listener.io, @private_listener.secret, @logger)
    end

    # When the master exits: its socket and its stats go with it.
    def remove_runtime_files
      return unless Process.pid == @master_pid

      @private_listener&.remove
      File.unlink(Stats.path) if File.file?(Stats.path)
    end

    private

    # The same ssl blocks with new files (or new contents): the front loads
    # them itself, keeping every connection, and says how it went.
    def reload_tls(blocks)
      @logger.info "nightmare front pid=#{@current.pid}: loading new certificates"
      tls_message = "tls #{JSON.generate(blocks.map(&:to_native))}"
      tell(@current, tls_message)
      @current.tls_blocks = blocks
    end

    def tell(front, line)
      front.control.write_nonblock("#{line}\n", exception: false)
    rescue Errno::EPIPE
      nil # it died; its replacement starts with the current settings
    end

    # In the new front process. Whatever fails here must not return into the
    # master's code (nor run its at_exit hooks): exit! instead.
    def run_front(options, listeners, tls_blocks, workers, control_reader, control_writer)
      control_writer.close
      # The front reaches the workers by the socket's path, as a client.
      @private_listener&.io&.close
      @retiring.each_value { |front| front.control.close }
      access_log = open_access_log(options[:access_log])
      early_signals = yield || []
      local = @private_listener && { socket: @private_listener.path, secret: @private_listener.secret, workers: workers }
      FrontProcess.new(logger: @logger, options: options, listeners: listeners, tls_blocks: tls_blocks,
                       local: local, control: control_reader, access_log: access_log,
                       early_signals: early_signals).run
    rescue Exception => e # rubocop:disable Lint/RescueException
      @logger.error "nightmare front could not start: #{e.message} (#{e.class})"
      exit!(1)
    end

    def fronts
      [@current, *@retiring.values].compact
    end

    # Opened before the front drops root (`user`), as Unicorn opens its own
    # logs: Unicorn then hands it to that user with its own logs, and its
    # reopening (USR1) finds it among them (append-only, unbuffered).
    def open_access_log(path)
      return if path == "off"

      File.open(path, "a").tap { |file| file.sync = true }
    end

    # A listener Unicorn re-created under the same name (its UNIX socket
    # file was deleted, then HUP) is a different socket: by name alone the
    # front would go on accepting on the old one.
    def identity(io)
      stat = io.stat
      [io.fileno, stat.dev, stat.ino]
    end

    def signal(pid, name)
      Process.kill(name, pid)
    rescue Errno::ESRCH
      # Already gone; reaping will tell.
    end

    def reap_nonblock(pid)
      found, status = Process.waitpid2(pid, Process::WNOHANG)
      reaped?(status, stopping: true) if found
    rescue Errno::ECHILD
      @retiring.delete(pid)
      @current = nil if @current&.pid == pid
    end

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end
  end
end
