# frozen_string_literal: true

require "json"

module Nightmare
  # The front's figures (open connections, requests in flight and queued
  # for the workers, temp file bytes, ...), which the front process writes
  # once a second beside the workers' private socket, so that the master and
  # its workers (a monitoring hook, a raindrops-style middleware) can read
  # them without asking the front.
  module Stats
    class << self
      # Where this master's front writes them (in Nightmare::RuntimeDir);
      # set in the master, and so known to the front and workers it forks.
      attr_accessor :path

      # Written whole under another name, then renamed: a reader never sees
      # half a file.
      def write(path, figures)
        partial = "#{path}.#{Process.pid}"
        File.write(partial, JSON.generate(figures))
        File.rename(partial, path)
      end

      # The latest figures, with symbol keys, or nil before the front wrote
      # any (or without nightmare).
      def read
        path && JSON.parse(File.read(path), symbolize_names: true)
      rescue Errno::ENOENT, JSON::ParserError
        nil
      end
    end
  end

  # See Nightmare::Stats.
  def self.stats = Stats.read
end
