# frozen_string_literal: true

require "kgio"
require_relative "handed_off_client"

module Nightmare
  # Stands in a worker's list of listeners in place of the public ones: the
  # master's private listener, through which the front hands over buffered
  # requests. #kgio_tryaccept answers as a listener does (a client, or nil
  # when there is none), after reading the front's preamble, so that
  # kgio_addr (and so REMOTE_ADDR) is the real client's address. Unicorn's
  # process_client then reads the request as it would from nginx, its first
  # read served from what came with the preamble (HandedOffClient).
  class HandoffAcceptor
    def initialize(listener, secret, logger)
      @listener = listener
      @preamble = Nightmare::Native::PreambleReader.new(secret)
      @logger = logger
    end

    def to_io
      @listener
    end

    # nil when another worker took the request first, or when the
    # connection did not come from this master's front (it is dropped).
    def kgio_tryaccept
      client = @listener.kgio_tryaccept(HandedOffClient) or return
      client.kgio_addr, client.request_start = @preamble.read(client.fileno)
      client
    rescue Nightmare::PreambleRefused => e
      client.close
      @logger.warn "nightmare: dropped a connection to the workers' private socket: #{e.message}"
      nil
    rescue Nightmare::Error => e
      client.close
      @logger.error "nightmare: #{e.message}"
      nil
    end

    def close
      @listener.close unless @listener.closed?
    end
  end
end
