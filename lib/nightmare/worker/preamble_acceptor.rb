# frozen_string_literal: true

require_relative "handed_off_client"

module Nightmare
  # Stands in a worker's list of listeners for one whose connections open
  # with a PROXY v2 preamble, and answers as a listener does to either
  # Unicorn (see UnicornFlavor): #kgio_tryaccept gives a client or nil,
  # #accept_nonblock gives [client, address] or :wait_readable. Either way
  # the preamble is read first, so REMOTE_ADDR is the real client's;
  # Unicorn's process_client then reads the request as it would from nginx,
  # its first read served from what came with the preamble
  # (HandedOffClient). A connection that is not a request (a stranger, a
  # probe) is dropped and the worker waits on; nothing raised here reaches
  # the worker's loop, which would retry at once, forever.
  class PreambleAcceptor
    def initialize(listener, preamble, logger)
      @listener = listener
      @preamble = preamble
      @logger = logger
    end

    def to_io
      @listener
    end

    # Unicorn with kgio.
    def kgio_tryaccept(*_unused)
      take&.first
    end

    # Unicorn without kgio: Socket#accept_nonblock(exception: false).
    def accept_nonblock(*_unused, **_options)
      take || :wait_readable
    end

    def close
      @listener.close unless @listener.closed?
    end

    private

    # [client, ClientAddress], or nil when nothing (usable) was waiting.
    def take
      fd, peer = Nightmare::Native.accept(@listener.fileno)
      return unless fd

      client = HandedOffClient.for_fd(fd)
      return drop(client) unless admitted?(peer)

      address, client.request_start = @preamble.read(client.fileno)
      client.kgio_addr = address if client.respond_to?(:kgio_addr=)
      [client, ClientAddress.new(address)]
    rescue Nightmare::PreambleProbe
      drop(client)
    rescue Nightmare::PreambleRefused => e
      @logger.warn "nightmare: dropped a connection #{source(peer)}to #{listener_name}: #{e.message}"
      drop(client)
    rescue StandardError => e
      trouble(e)
      drop(client)
    end

    # Subclasses name their listener (#listener_name) for the log, and may
    # judge a client's address before its preamble is read (#admitted?,
    # which logs why not) and name its source in the log.
    def admitted?(_peer) = true

    def source(_peer) = ""

    def drop(client)
      client&.close
      nil
    end

    # A failure of the system (no descriptors left): said at most once a
    # second, and the worker pauses a little rather than spin on it.
    def trouble(error)
      now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      if @last_trouble.nil? || now - @last_trouble >= 1
        @last_trouble = now
        @logger.error "nightmare: #{listener_name}: #{error.message} (#{error.class})"
      end
      sleep 0.1
    end
  end
end
