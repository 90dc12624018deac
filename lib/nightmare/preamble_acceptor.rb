# frozen_string_literal: true

require "kgio"
require_relative "handed_off_client"

module Nightmare
  # Stands in a worker's list of listeners for one whose connections open
  # with a PROXY v2 preamble. #kgio_tryaccept answers as a listener does (a
  # client, or nil when there is none or the connection was dropped), after
  # reading the preamble, so that kgio_addr (and so REMOTE_ADDR) is the real
  # client's address. Unicorn's process_client then reads the request as it
  # would from nginx, its first read served from what came with the
  # preamble (HandedOffClient).
  class PreambleAcceptor
    def initialize(listener, preamble, logger)
      @listener = listener
      @preamble = preamble
      @logger = logger
    end

    def to_io
      @listener
    end

    def kgio_tryaccept
      client = accept or return
      return drop(client) unless admitted?(client)

      client.kgio_addr, client.request_start = @preamble.read(client.fileno)
      client
    rescue Nightmare::PreambleProbe
      drop(client)
    rescue Nightmare::PreambleRefused => e
      @logger.warn "nightmare: dropped a connection #{source(client)}to #{listener_name}: #{e.message}"
      drop(client)
    rescue Nightmare::Error => e
      @logger.error "nightmare: #{listener_name}: #{e.message}"
      drop(client)
    end

    def close
      @listener.close unless @listener.closed?
    end

    private

    # Subclasses name their listener (#listener_name) for the log, and may
    # accept differently, judge a client before its preamble is read
    # (#admitted?, which logs why not) and name its source in the log.
    def accept
      @listener.kgio_tryaccept(HandedOffClient)
    end

    def admitted?(_client) = true

    def source(_client) = ""

    def drop(client)
      client&.close
      nil
    end
  end
end
